"""Least privilege in PostgreSQL, tried with real logins: the roles of migration 0003, and the
tenant-database functions of migration 0005 through which the writer runs DATABASE resources."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import TopicReader, WorkerProcess
from pydantic import SecretStr

from consumer.participants.builtin.registry import add_entity
from producers.commands import CommandPublisher
from provisioning.settings import Settings
from provisioning.topics import TopicLayout

INSUFFICIENT_PRIVILEGE = "42501"
INVALID_PARAMETER_VALUE = "22023"


@pytest.fixture
def login_as(migrated: sa.Engine) -> Iterator:
    made: list[tuple[str, sa.Engine]] = []

    def login(group: str) -> sa.Engine:
        name, password = f"t_{group}_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        with migrated.begin() as conn:
            conn.execute(sa.text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' "
                                 f"IN ROLE {group}"))
        url = migrated.url.set(username=name, password=password)
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        made.append((name, engine))
        return engine

    yield login
    for name, engine in made:
        engine.dispose()
        with migrated.begin() as conn:
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {name}"))


def refused_with(engine: sa.Engine, sql: str, **params: object) -> str | None:
    """The SQLSTATE PostgreSQL refused `sql` with, or None when it ran."""
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql), params)
    except sa.exc.DBAPIError as exc:
        return exc.orig.sqlstate
    return None


def denied(engine: sa.Engine, sql: str, **params: object) -> bool:
    # insufficient_privilege: "permission denied ...", "must be owner of ...", "must have admin
    # option on role ...", "must be superuser to ..."
    return refused_with(engine, sql, **params) == INSUFFICIENT_PRIVILEGE


def test_the_reader_sees_the_projection_only_and_changes_nothing(login_as) -> None:
    reader = login_as("provisioning_reader")
    with reader.connect() as conn:
        conn.execute(sa.text("SELECT count(*) FROM provisioning_requests")).scalar_one()
        conn.execute(sa.text("SELECT * FROM provisioning_stuck_requests LIMIT 1")).all()
        conn.execute(sa.text("SELECT * FROM provisioning_recent_failures LIMIT 1")).all()
        conn.execute(sa.text("SELECT * FROM provisioning_needs_attention LIMIT 1")).all()
    assert denied(reader, "DELETE FROM provisioning_events")
    assert denied(reader, "SELECT * FROM tenants LIMIT 1")
    assert denied(reader, "SELECT * FROM billing_accounts LIMIT 1")


def test_the_writer_reads_and_writes_rows_but_changes_no_schema(login_as) -> None:
    writer = login_as("provisioning_writer")
    with writer.connect() as conn:
        conn.execute(sa.text("SELECT count(*) FROM tenants")).scalar_one()
        conn.execute(sa.text("SELECT count(*) FROM provisioning_events")).scalar_one()
        conn.execute(sa.text("SELECT * FROM provisioning_needs_attention LIMIT 1")).all()
    assert denied(writer, "CREATE TABLE intruder (id int)")
    assert denied(writer, "DROP TABLE tenants")
    assert denied(writer, "ALTER TABLE provisioning_requests ADD COLUMN x int")


# --- DATABASE resources: migration 0005's functions ------------------------------------------

CREATE_TENANT_DATABASE = "SELECT provisioning_create_tenant_database(:schema, :role)"
DROP_TENANT_DATABASE = "SELECT provisioning_drop_tenant_database(:schema, :role)"

# Names the functions must refuse, written out by hand: (schema, role).
PAIR = "tenant_0123456789ab_carts_01234567"
REFUSED_NAMES = [
    ("public", "public_owner"),                                   # the service's own schema
    ("provisioning_writer", "provisioning_writer_owner"),
    ("intruder", "intruder_owner"),
    (PAIR, "provisioning_writer"),                                # a role not the schema's pair
    (PAIR, "provisioning_tenant_ddl"),
    (PAIR, f"{PAIR}_admin"),
    (PAIR, None),
    (None, None),
    ("TENANT_0123456789AB_CARTS_01234567", "TENANT_0123456789AB_CARTS_01234567_owner"),
    ("tenant_0123456789ab_Carts_01234567", "tenant_0123456789ab_Carts_01234567_owner"),
    ("tenant_0123456789ab__carts_01234567", "tenant_0123456789ab__carts_01234567_owner"),
    (f"tenant_0123456789ab_{'a' * 21}_01234567", f"tenant_0123456789ab_{'a' * 21}_01234567_owner"),
    ("tenant_0123456789a_carts_01234567", "tenant_0123456789a_carts_01234567_owner"),
    ("tenant_0123456789ab_carts_0123456g", "tenant_0123456789ab_carts_0123456g_owner"),
    (f"{PAIR}\n", f"{PAIR}\n_owner"),
    (f'{PAIR}" CASCADE; DROP ROLE provisioning_reader; --', f"{PAIR}_owner"),
    (f"{PAIR}_owner", f"{PAIR}_owner_owner"),                     # a role's name as a schema
]


def tenant_pair(label: str = "carts") -> tuple[str, str]:
    """A fresh schema-and-role pair of the form the resource participant makes."""
    schema = f"tenant_{uuid.uuid4().hex[:12]}_{label}_{uuid.uuid4().hex[:8]}"
    return schema, f"{schema}_owner"


def schema_owner(engine: sa.Engine, schema: str) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(sa.text("SELECT pg_get_userbyid(nspowner) FROM pg_namespace "
                                   "WHERE nspname = :schema"), {"schema": schema})


def role_attributes(engine: sa.Engine, role: str) -> dict[str, bool] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, "
            "rolbypassrls FROM pg_roles WHERE rolname = :role"), {"role": role}).mappings().first()
    return dict(row) if row else None


def named_objects(engine: sa.Engine, schema: str | None, role: str | None
                  ) -> tuple[str | None, dict[str, bool] | None]:
    """The owner of the schema and the attributes of the role so named (None: no such one)."""
    return (None if schema is None else schema_owner(engine, schema),
            None if role is None else role_attributes(engine, role))


NOTHING_BUT_A_GROUP = {"rolcanlogin": False, "rolsuper": False, "rolcreaterole": False,
                       "rolcreatedb": False, "rolreplication": False, "rolbypassrls": False}


@pytest.fixture
def drop_afterwards(migrated: sa.Engine) -> Iterator[list[tuple[str, str]]]:
    """Schema-and-role pairs a test made; whatever is left of them is dropped at the end,
    with the registry rows of resources that name them."""
    pairs: list[tuple[str, str]] = []
    yield pairs
    with migrated.begin() as conn:
        for schema, role in pairs:
            conn.execute(sa.text("DELETE FROM resources WHERE db_schema = :schema"),
                         {"schema": schema})
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))


def test_the_writer_makes_and_drops_a_tenant_database_only_through_the_functions(
    login_as, migrated: sa.Engine, drop_afterwards: list
) -> None:
    writer = login_as("provisioning_writer")
    schema, role = tenant_pair()
    drop_afterwards.append((schema, role))

    with writer.begin() as conn:
        conn.execute(sa.text(CREATE_TENANT_DATABASE), {"schema": schema, "role": role})

    assert schema_owner(migrated, schema) == role
    assert role_attributes(migrated, role) == NOTHING_BUT_A_GROUP
    # The writer made them but is not let in: an operator grants the role to application logins.
    with writer.connect() as conn:
        assert conn.scalar(sa.text("SELECT pg_has_role(CURRENT_USER, :role, 'MEMBER')"),
                           {"role": role}) is False
    assert denied(writer, f'SET ROLE "{role}"')
    assert denied(writer, f'CREATE TABLE "{schema}".intruder (id int)')

    with writer.begin() as conn:
        conn.execute(sa.text(DROP_TENANT_DATABASE), {"schema": schema, "role": role})

    assert schema_owner(migrated, schema) is None
    assert role_attributes(migrated, role) is None


@pytest.mark.parametrize("name", ["carts", "", "Ünïcode Cärts!", "abcdefghijklmnopqrs tail",
                                  "x" * 40, "9 lives"])
def test_every_name_the_resource_participant_makes_is_accepted(
    login_as, migrated: sa.Engine, drop_afterwards: list, name: str
) -> None:
    from consumer.participants.builtin.resource import database_names

    writer = login_as("provisioning_writer")
    schema, role = database_names(uuid.uuid4(), uuid.uuid4(), name)
    drop_afterwards.append((schema, role))

    with writer.begin() as conn:
        conn.execute(sa.text(CREATE_TENANT_DATABASE), {"schema": schema, "role": role})
    assert schema_owner(migrated, schema) == role
    with writer.begin() as conn:
        conn.execute(sa.text(DROP_TENANT_DATABASE), {"schema": schema, "role": role})
    assert schema_owner(migrated, schema) is None


@pytest.mark.parametrize(("schema", "role"), REFUSED_NAMES)
def test_the_functions_refuse_every_other_name(
    login_as, migrated: sa.Engine, schema: str | None, role: str | None
) -> None:
    writer = login_as("provisioning_writer")
    # Other tests make and drop schemas and roles meanwhile: only the named ones are compared.
    named_before = named_objects(migrated, schema, role)

    assert refused_with(writer, CREATE_TENANT_DATABASE, schema=schema, role=role) \
        == INVALID_PARAMETER_VALUE
    assert refused_with(writer, DROP_TENANT_DATABASE, schema=schema, role=role) \
        == INVALID_PARAMETER_VALUE

    assert named_objects(migrated, schema, role) == named_before
    for kept in ("provisioning_writer", "provisioning_reader", "provisioning_tenant_ddl"):
        assert role_attributes(migrated, kept) is not None


def test_the_drop_refuses_a_schema_or_role_the_functions_did_not_make(
    login_as, migrated: sa.Engine, drop_afterwards: list
) -> None:
    writer = login_as("provisioning_writer")
    foreign_schema, foreign_role = tenant_pair("foreign")       # made by hand, not by the functions
    owned_by_service, its_pair = tenant_pair("service")         # a tenant-like schema of ours
    no_schema, lone_role = tenant_pair("lone")                  # a role made by hand, alone
    drop_afterwards.extend([(foreign_schema, foreign_role), (owned_by_service, its_pair),
                            (no_schema, lone_role)])
    with migrated.begin() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{foreign_role}" NOLOGIN'))
        conn.execute(sa.text(f'GRANT "{foreign_role}" TO CURRENT_USER'))
        conn.execute(sa.text(f'CREATE SCHEMA "{foreign_schema}" AUTHORIZATION "{foreign_role}"'))
        conn.execute(sa.text(f'CREATE SCHEMA "{owned_by_service}"'))
        conn.execute(sa.text(f'CREATE ROLE "{lone_role}" NOLOGIN'))

    assert denied(writer, DROP_TENANT_DATABASE, schema=foreign_schema, role=foreign_role)
    assert denied(writer, DROP_TENANT_DATABASE, schema=owned_by_service, role=its_pair)
    assert denied(writer, DROP_TENANT_DATABASE, schema=no_schema, role=lone_role)

    assert schema_owner(migrated, foreign_schema) == foreign_role
    assert role_attributes(migrated, foreign_role) is not None
    assert schema_owner(migrated, owned_by_service) == migrated.url.username
    assert role_attributes(migrated, lone_role) is not None


def test_the_writer_alone_can_change_no_schema_role_or_grant(login_as, migrated: sa.Engine) -> None:
    writer = login_as("provisioning_writer")
    database = migrated.url.database
    for statement in (
        "CREATE SCHEMA intruder",
        "CREATE ROLE intruder",
        "CREATE ROLE intruder SUPERUSER",
        "CREATE ROLE intruder CREATEROLE",
        "ALTER ROLE CURRENT_USER CREATEROLE",
        "ALTER ROLE provisioning_tenant_ddl LOGIN",
        "GRANT provisioning_tenant_ddl TO CURRENT_USER",
        "GRANT provisioning_reader TO CURRENT_USER",
        "SET ROLE provisioning_tenant_ddl",
        "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        # Replacing a function's body would run anything with its owner's rights.
        "CREATE OR REPLACE FUNCTION provisioning_create_tenant_database(tenant_schema text, "
        "tenant_role text) RETURNS void LANGUAGE sql AS 'SELECT'",
        "ALTER FUNCTION provisioning_drop_tenant_database(text, text) OWNER TO CURRENT_USER",
        "ALTER FUNCTION provisioning_drop_tenant_database(text, text) "
        "SET search_path = public, pg_catalog",
        "DROP FUNCTION provisioning_drop_tenant_database(text, text)",
    ):
        assert denied(writer, statement), statement
    # A GRANT of what one does not hold grants nothing (PostgreSQL warns instead of failing).
    with writer.begin() as conn:
        conn.execute(sa.text(f'GRANT CREATE ON DATABASE "{database}" TO CURRENT_USER'))
        conn.execute(sa.text("GRANT CREATE ON SCHEMA public TO CURRENT_USER"))
    with writer.connect() as conn:
        assert conn.scalar(sa.text(
            "SELECT has_database_privilege(:db, 'CREATE') OR has_schema_privilege('public', "
            "'CREATE') OR pg_has_role('provisioning_tenant_ddl', 'MEMBER')"), {"db": database}
        ) is False


def test_the_reader_cannot_call_the_tenant_database_functions(login_as) -> None:
    reader = login_as("provisioning_reader")
    schema, role = tenant_pair()

    assert denied(reader, CREATE_TENANT_DATABASE, schema=schema, role=role)
    assert denied(reader, DROP_TENANT_DATABASE, schema=schema, role=role)


def test_only_the_writer_may_start_a_step_call(login_as) -> None:
    start = "SELECT * FROM provisioning_start_step_call(:key, '1000')"
    writer, reader = login_as("provisioning_writer"), login_as("provisioning_reader")

    with writer.begin() as conn:
        assert conn.execute(sa.text(start), {"key": "no-such-key"}).all() == []
    assert denied(reader, start, key="no-such-key")


def test_the_functions_owner_cannot_log_in_and_only_the_migrations_role_holds_it(
    migrated: sa.Engine,
) -> None:
    assert role_attributes(migrated, "provisioning_tenant_ddl") == {
        **NOTHING_BUT_A_GROUP, "rolcreaterole": True}
    with migrated.connect() as conn:
        members = set(conn.scalars(sa.text(
            "SELECT pg_get_userbyid(member) FROM pg_auth_members "
            "WHERE roleid = 'provisioning_tenant_ddl'::regrole")))
        callers = set(conn.scalars(sa.text(
            "SELECT DISTINCT (aclexplode(proacl)).grantee::regrole::text FROM pg_proc "
            "WHERE proname IN ('provisioning_create_tenant_database', "
            "'provisioning_drop_tenant_database') "
            "AND pronamespace = to_regnamespace(current_schema())"
        )))
    assert members == {migrated.url.username}
    assert callers == {"provisioning_tenant_ddl", "provisioning_writer"}  # not PUBLIC (0)


# --- the worker as the writer: all four workflows, DATABASE resources included ----------------


@pytest.fixture
def writer_settings(settings: Settings, login_as) -> Settings:
    """This test's settings with the database URL of a fresh login in provisioning_writer."""
    writer = login_as("provisioning_writer")
    url = writer.url.render_as_string(hide_password=False)
    return settings.model_copy(update={"database_url": SecretStr(url)})


@pytest.fixture
def writer_worker(writer_settings: Settings, topics: TopicLayout, tmp_path: Path,
                  group_id: str) -> Iterator[WorkerProcess]:
    process = WorkerProcess(writer_settings, tmp_path, group_id).start()
    yield process
    code = process.stop()
    assert code == 0, f"worker did not shut down cleanly ({code}):\n{process.log_text()[-3000:]}"


def run_saga(settings: Settings, events: TopicReader, record: str, command: dict) -> list:
    """Publish one command; the request's events up to its terminal one."""
    request_id = str(uuid.uuid4())
    command = {**command, "requestId": request_id, "replyTo": None,
               "requestedAt": int(time.time() * 1000)}
    with CommandPublisher(settings) as publisher:
        publisher.publish(record, command)
    events.wait_for(lambda reader: reader.terminal(request_id), 90, f"{record} to finish")
    return events.by_key[request_id]


def step_output(trail: list, step: str) -> dict[str, str]:
    return next(r.value["output"] for r in trail
                if r.record_name == "ProvisioningStepCompleted" and r.value["step"] == step)


def test_a_worker_logged_in_as_the_writer_runs_every_workflow_and_undoes_a_database(
    writer_settings: Settings, writer_worker: WorkerProcess, topics: TopicLayout,
    migrated: sa.Engine, drop_afterwards: list,
) -> None:
    events = TopicReader(writer_settings, topics.events)
    try:
        entity = f"writer-{uuid.uuid4().hex[:10]}"
        add_entity(migrated, entity, "Least Privilege Ltd")
        admin = f"user-{uuid.uuid4().hex[:8]}"
        tenant = run_saga(writer_settings, events, "ProvisionTenantRequest", {
            "entityId": entity, "tenantName": "Least Privilege", "subscriptionPlan": "BUSINESS",
            "billingInfo": {"accountName": "Least Privilege Ltd", "currency": "EUR",
                            "billingEmail": "billing@least.example", "paymentMethod": None},
            "requestedBy": admin})
        assert tenant[-1].record_name == "ProvisioningSucceeded", tenant[-1].value
        tenant_id = tenant[-1].value["resourceId"]
        for record, command in (
            ("ProvisionServiceRequest", {"serviceName": "CartService", "slaTier": "GOLD"}),
            ("ProvisionUserRequest", {"email": f"{uuid.uuid4().hex[:8]}@least.example",
                                      "roleName": "member"}),
        ):
            trail = run_saga(writer_settings, events, record,
                             {"tenantId": tenant_id, "requestedBy": admin, **command})
            assert trail[-1].record_name == "ProvisioningSucceeded", trail[-1].value

        database = run_saga(writer_settings, events, "ProvisionResourceRequest", {
            "tenantId": tenant_id, "serviceName": "CartService", "resourceType": "DATABASE",
            "resourceSpec": {"sizeGb": "5", "name": "carts"}, "requestedBy": admin})
        assert database[-1].record_name == "ProvisioningSucceeded", database[-1].value
        made = step_output(database, "allocate-resource")
        schema, role = made["databaseSchema"], made["databaseRole"]
        drop_afterwards.append((schema, role))
        assert schema_owner(migrated, schema) == role
        assert role_attributes(migrated, role) == NOTHING_BUT_A_GROUP
        with migrated.connect() as conn:  # it really was the writer's login that did all this
            assert conn.scalar(sa.text("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE usename = :login"),
                               {"login": sa.make_url(writer_settings.database_url_plain())
                                .username}) >= 1

        # Billing closed: update-billing refuses after allocate-resource made a second pair.
        with migrated.begin() as conn:
            conn.execute(sa.text("UPDATE billing_accounts SET status = 'closed' "
                                 "WHERE tenant_id = :tenant"), {"tenant": tenant_id})
        refused = run_saga(writer_settings, events, "ProvisionResourceRequest", {
            "tenantId": tenant_id, "serviceName": "CartService", "resourceType": "DATABASE",
            "resourceSpec": {"sizeGb": "2", "name": "ledger"}, "requestedBy": admin})
        assert refused[-1].record_name == "ProvisioningFailedEvent"
        assert refused[-1].value["failedStep"] == "update-billing"
        undone = step_output(refused, "allocate-resource")
        drop_afterwards.append((undone["databaseSchema"], undone["databaseRole"]))
        assert [r.value["step"] for r in refused
                if r.record_name == "ProvisioningStepCompensated"] == ["allocate-resource"]
        assert schema_owner(migrated, undone["databaseSchema"]) is None
        assert role_attributes(migrated, undone["databaseRole"]) is None
        # The first database is untouched by the second's undo.
        assert schema_owner(migrated, schema) == role
    finally:
        events.close()
