"""Invalid commands, written out by hand: what each door must refuse, and the words it must use.

Each row is a change to a valid command (dotted names for nested fields, as an operator types
them for `provisioning dlq redrive --set`), the words the refusal must contain, and the doors
it reaches. The worker (`read_command`), the API (422) and the DLQ redrive are each held to
this table: the code under test is never its own oracle, and loosening any rule (control
characters, e-mail or identifier formats, extra fields, an unsupported resource type, a reply
topic) fails a test.
"""

from __future__ import annotations

from dataclasses import dataclass

WORKER, API, REDRIVE = "worker", "api", "redrive"
ALL_DOORS = (WORKER, API, REDRIVE)


@dataclass(frozen=True)
class InvalidCommand:
    what: str
    record: str
    changes: dict[str, str]
    says: str  # words the refusal contains
    doors: tuple[str, ...] = ALL_DOORS

    def __str__(self) -> str:
        return self.what


TENANT, SERVICE = "ProvisionTenantRequest", "ProvisionServiceRequest"
USER, RESOURCE = "ProvisionUserRequest", "ProvisionResourceRequest"

TABLE = [
    InvalidCommand("an e-mail without @", USER, {"email": "jane.acme.example"}, "email"),
    InvalidCommand("a control character in an e-mail", USER,
                   {"email": "jane\x07@acme.example"}, "email"),
    InvalidCommand("an e-mail domain without a dot", USER, {"email": "jane@acme"}, "email"),
    InvalidCommand("a NUL in a tenant name", TENANT, {"tenantName": "Acme\x00Widgets"},
                   "tenantName"),
    InvalidCommand("a line break in a tenant name", TENANT, {"tenantName": "Acme\nWidgets"},
                   "tenantName"),
    InvalidCommand("a tenant name of 201 characters", TENANT, {"tenantName": "x" * 201},
                   "tenantName"),
    InvalidCommand("a space in an entity id", TENANT, {"entityId": "entity 42"}, "entityId"),
    InvalidCommand("an entity id starting with a dash", TENANT, {"entityId": "-entity"},
                   "entityId"),
    InvalidCommand("an entity id of 129 characters", TENANT, {"entityId": "e" * 129},
                   "entityId"),
    InvalidCommand("a currency in lower case", TENANT, {"billingInfo.currency": "eur"},
                   "currency"),
    InvalidCommand("a currency of four letters", TENANT, {"billingInfo.currency": "EURO"},
                   "currency"),
    InvalidCommand("a billing e-mail without a domain dot", TENANT,
                   {"billingInfo.billingEmail": "billing@acme"}, "billingEmail"),
    InvalidCommand("a service name with a space", SERVICE, {"serviceName": "Cart Service"},
                   "serviceName"),
    # The API takes the tenant from X-Tenant-ID, checked against the token instead.
    InvalidCommand("a tenant id with a slash", SERVICE, {"tenantId": "t/1"}, "tenantId",
                   doors=(WORKER, REDRIVE)),
    InvalidCommand("an empty role name", USER, {"roleName": ""}, "roleName"),
    InvalidCommand("an unsupported resource type", RESOURCE, {"resourceType": "UNSUPPORTED"},
                   "resourceType"),
    InvalidCommand("a resource spec key starting with a digit", RESOURCE,
                   {"resourceSpec.1gb": "20"}, "resourceSpec"),
    InvalidCommand("a control character in a resource spec value", RESOURCE,
                   {"resourceSpec.name": "carts\x01"}, "resourceSpec"),
    InvalidCommand("33 resource spec entries", RESOURCE,
                   {f"resourceSpec.k{i}": "v" for i in range(33)}, "resourceSpec"),
    InvalidCommand("a reply topic internal to Kafka", SERVICE, {"replyTo": "__consumer_offsets"},
                   "internal Kafka topic"),
    InvalidCommand("a reply topic of the service itself", SERVICE,
                   {"replyTo": "staging.provisioning.state"},
                   "one of the Provisioning Service's own topics"),
    InvalidCommand("a reply topic name Kafka cannot have", SERVICE, {"replyTo": "replies/to"},
                   "replyTo"),
    # The API sets requestedBy from the token's subject.
    InvalidCommand("an empty requester", USER, {"requestedBy": ""}, "requestedBy",
                   doors=(WORKER, REDRIVE)),
    InvalidCommand("a requester with a line break", USER, {"requestedBy": "ada\nroot"},
                   "requestedBy", doors=(WORKER, REDRIVE)),
    # Avro has no extra fields; the API's bodies and a redrive's changes could.
    InvalidCommand("a field the contract does not have", TENANT, {"vip": "yes"}, "vip",
                   doors=(API, REDRIVE)),
]


def rows(door: str) -> list[InvalidCommand]:
    return [row for row in TABLE if door in row.doors]
