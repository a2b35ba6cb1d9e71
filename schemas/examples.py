"""One realistic datum per top-level record: documentation, and test data for every codec test.

All belong to one story, a tenant provisioning that completes, plus the other commands. Values
are what `codec.decode` returns: timestamps in epoch milliseconds, UUIDs as strings. Treat
`EXAMPLES` as read-only; `example(name)` returns a copy to change.
"""

from __future__ import annotations

import copy
from typing import Any

REQUEST_ID = "3f6c2a9e-8d41-4b7a-9c55-1e2f3a4b5c6d"
TENANT_ID = "tenant-7f3a91"
T0 = 1_764_331_200_000  # 2025-11-28T12:00:00Z
STEP_TOPIC = "provisioning.step-replies"

_EVENT = {
    "requestId": REQUEST_ID,
    "run": 1,
    "workflowType": "tenant",
    "tenantId": TENANT_ID,
}

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

EXAMPLES: dict[str, dict[str, Any]] = {
    "ProvisionTenantRequest": {
        "requestId": REQUEST_ID,
        "requestedBy": "user-42",
        "replyTo": "entity-management.provisioning-replies",
        "requestedAt": T0,
        "entityId": "entity-9b1c",
        "tenantName": "Acme Widgets",
        "subscriptionPlan": "BUSINESS",
        "billingInfo": {
            "accountName": "Acme Widgets Ltd",
            "billingEmail": "billing@acme.example",
            "currency": "EUR",
            "paymentMethod": "pm_card_visa_4242",
        },
    },
    "ProvisionServiceRequest": {
        "requestId": "6a0d2c1b-3e4f-4a5b-8c7d-9e0f1a2b3c4d",
        "requestedBy": "svc-cart",
        "replyTo": None,
        "requestedAt": T0 + 60_000,
        "tenantId": TENANT_ID,
        "serviceName": "CartService",
        "slaTier": "GOLD",
    },
    "ProvisionUserRequest": {
        "requestId": "b7e8f9a0-1b2c-4d3e-9f4a-5b6c7d8e9f0a",
        "requestedBy": "user-42",
        "replyTo": "entity-management.provisioning-replies",
        "requestedAt": T0 + 120_000,
        "tenantId": TENANT_ID,
        "email": "jane.doe@acme.example",
        "roleName": "tenant-admin",
    },
    "ProvisionResourceRequest": {
        "requestId": "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
        "requestedBy": "svc-cart",
        "replyTo": None,
        "requestedAt": T0 + 180_000,
        "tenantId": TENANT_ID,
        "serviceName": "CartService",
        "resourceType": "DATABASE",
        "resourceSpec": {"sizeGb": "20", "name": "carts", "region": "eu-west-1"},
    },
    "ProvisioningStarted": {"requestId": REQUEST_ID, "run": 1, "occurredAt": T0 + 15},
    "ProvisioningCompleted": {
        "requestId": REQUEST_ID,
        "run": 1,
        "resourceId": TENANT_ID,
        "occurredAt": T0 + 2_400,
    },
    "ProvisioningFailed": {
        "requestId": REQUEST_ID,
        "run": 1,
        "reason": "billing provider rejected the payment method",
        "failedStep": "setup-billing",
        "occurredAt": T0 + 2_400,
    },
    "ProvisioningRequested": {
        **_EVENT,
        "tenantId": None,
        "sequence": 1,
        "occurredAt": T0 + 12,
        "workflowVersion": 1,
        "requestedBy": "user-42",
        "payloadHash": "9c1185a5c5e9fc54612808977ee8f548b2258d31aa0fd1d9f1e5bd6b0f8a35e3",
        "params": {"entityId": "entity-42", "subscriptionPlan": "BUSINESS"},
        "replyTo": "entity-management.provisioning-replies",
        "traceParent": TRACEPARENT,
    },
    "ProvisioningStepStarted": {
        **_EVENT,
        "tenantId": None,
        "sequence": 2,
        "occurredAt": T0 + 14,
        "step": "create-tenant",
        "attempt": 1,
        "participant": "entity-management",
        "deadlineAt": T0 + 10_014,
        "stepDeadline": T0 + 60_014,
    },
    "ProvisioningStepCompleted": {
        **_EVENT,
        "sequence": 3,
        "occurredAt": T0 + 820,
        "step": "create-tenant",
        "attempt": 1,
        "output": {"tenantId": TENANT_ID},
    },
    "ProvisioningStepFailed": {
        **_EVENT,
        "sequence": 5,
        "occurredAt": T0 + 1_300,
        "step": "setup-billing",
        "attempt": 1,
        "transient": True,
        "reason": "billing service timed out after 5 s",
        "nextRetryAt": T0 + 1_500,
    },
    "ProvisioningSucceeded": {
        **_EVENT,
        "sequence": 10,
        "occurredAt": T0 + 2_400,
        "resourceId": TENANT_ID,
    },
    "ProvisioningFailedEvent": {
        **_EVENT,
        "sequence": 9,
        "occurredAt": T0 + 2_400,
        "reason": "billing provider rejected the payment method",
        "failedStep": "setup-billing",
    },
    "ProvisioningCompensationStarted": {
        **_EVENT,
        "sequence": 7,
        "occurredAt": T0 + 2_250,
        "step": "create-tenant",
        "attempt": 1,
        "participant": "entity-management",
        "compensation": "delete-tenant",
        "deadlineAt": T0 + 12_250,
    },
    "ProvisioningStepCompensated": {
        **_EVENT,
        "sequence": 8,
        "occurredAt": T0 + 2_300,
        "step": "create-tenant",
        "attempt": 1,
    },
    "ProvisioningCompensationFailed": {
        **_EVENT,
        "sequence": 8,
        "occurredAt": T0 + 2_300,
        "step": "create-tenant",
        "attempt": 5,
        "reason": "entity management answered 500 five times",
        "nextRetryAt": None,
    },
    "ProvisioningRejected": {
        **_EVENT,
        "tenantId": None,
        "sequence": 11,
        "occurredAt": T0 + 90_000,
        "reason": "requestId already used with other parameters",
        "code": "conflict",
    },
    "ProvisioningOperatorAction": {
        **_EVENT,
        "tenantId": TENANT_ID,
        "sequence": 12,
        "occurredAt": T0 + 95_000,
        "operator": "ops-ada",
        "action": "CANCEL",
        "reason": "customer withdrew the order",
    },
    "ProvisioningOperatorCommand": {
        "requestId": REQUEST_ID,
        "operator": "ops-ada",
        "action": "CANCEL",
        "reason": "customer withdrew the order",
        "requestedAt": T0 + 94_000,
    },
    "SagaState": {
        "requestId": REQUEST_ID,
        "workflowType": "tenant",
        "workflowVersion": 1,
        "tenantId": TENANT_ID,
        "status": "IN_PROGRESS",
        "run": 1,
        "sequence": 5,
        "payloadHash": "9c1185a5c5e9fc54612808977ee8f548b2258d31aa0fd1d9f1e5bd6b0f8a35e3",
        "params": {
            "entityId": "entity-9b1c",
            "tenantName": "Acme Widgets",
            "subscriptionPlan": "BUSINESS",
            "billingInfo.accountName": "Acme Widgets Ltd",
            "billingInfo.billingEmail": "billing@acme.example",
            "billingInfo.currency": "EUR",
            "billingInfo.paymentMethod": "pm_card_visa_4242",
        },
        "outputs": {"tenantId": TENANT_ID},
        "requestedBy": "user-42",
        "replyTo": "entity-management.provisioning-replies",
        "currentStep": "setup-billing",
        "completedSteps": ["validate-entity", "create-tenant"],
        "compensatedSteps": [],
        "attempts": {"validate-entity": 1, "create-tenant": 1, "setup-billing": 1},
        "nextRetryAt": T0 + 1_500,
        "stepDeadline": None,
        "attemptDeadline": None,
        "compensationAttempts": {},
        "compensationFailedSteps": [],
        "failedStep": None,
        "reason": None,
        "resourceId": None,
        "traceParent": TRACEPARENT,
        "startedAt": T0 + 12,
        "updatedAt": T0 + 1_300,
        "finishedAt": None,
    },
    "StepRequest": {
        **_EVENT,
        "tenantId": None,
        "step": "create-tenant",
        "action": "EXECUTE",
        "attempt": 1,
        "idempotencyKey": f"{REQUEST_ID}:1:create-tenant",
        "params": {"entityId": "entity-9b1c", "tenantName": "Acme Widgets"},
        "deadline": T0 + 30_014,
        "replyTopic": STEP_TOPIC,
        "occurredAt": T0 + 14,
    },
    "StepReply": {
        "requestId": REQUEST_ID,
        "run": 1,
        "step": "create-tenant",
        "action": "EXECUTE",
        "attempt": 1,
        "idempotencyKey": f"{REQUEST_ID}:1:create-tenant",
        "outcome": "SUCCEEDED",
        "output": {"tenantId": TENANT_ID},
        "reason": None,
        "occurredAt": T0 + 815,
        "participant": "entity-management",
    },
}


def example(record_name: str) -> dict[str, Any]:
    """A deep copy of the example of `record_name`, free to change."""
    return copy.deepcopy(EXAMPLES[record_name])
