"""DATABASE resources under the writer role: two functions that create and drop tenant databases.

Revision ID: 0005_resource_ddl
Revises: 0004_leftovers
Create Date: 2026-12-05

A DATABASE resource is a PostgreSQL schema owned by a NOLOGIN role of its own. Creating a role
takes CREATEROLE, which in PostgreSQL 15 is nearly superuser: its holder may alter and drop
every non-superuser role and grant itself membership in any of them, `pg_execute_server_program`
and the service's own roles included. So `provisioning_writer` gets no DDL right. Instead:

- `provisioning_tenant_ddl` (NOLOGIN, CREATEROLE, CREATE on the database) owns
- `provisioning_create_tenant_database(tenant_schema, tenant_role)` and
  `provisioning_drop_tenant_database(tenant_schema, tenant_role)`, SECURITY DEFINER functions
  that accept only the names the resource participant makes
  (`tenant_<12 hex>_<label>_<8 hex>` and that name plus `_owner`) and run a fixed set of
  statements on them. A drop refuses a schema the pair's role does not own and a role the
  functions did not create.
- Only `provisioning_writer` may execute them (not PUBLIC, not `provisioning_reader`).

The writer calls them on its own connection, inside the step's transaction, so the schema, the
role, the registry row and the idempotency record still commit or vanish together; no second
login or secret is needed. Nobody logs in as `provisioning_tenant_ddl`; its one member is the
role running the migrations, which must own the functions' owner to create, replace and drop
them, and which has CREATEROLE anyway.

The role running this migration needs CREATEROLE and must own the database (for GRANT CREATE
ON DATABASE), or a database administrator creates the role beforehand:

    CREATE ROLE provisioning_tenant_ddl NOLOGIN CREATEROLE;
    GRANT CREATE ON DATABASE <db> TO provisioning_tenant_ddl;
    GRANT provisioning_tenant_ddl TO <migration role>;
"""

from __future__ import annotations

from alembic import op

revision = "0005_resource_ddl"
down_revision = "0004_leftovers"
branch_labels = None
depends_on = None

DDL_ROLE = "provisioning_tenant_ddl"

# What `consumer.participants.builtin.resource.database_names` makes: "tenant_", 12 hex digits
# of the tenant id, a label of the resource's name (starts with a letter or digit, at most 20
# of [a-z0-9_]), 8 hex digits of the resource id. Kept here, not imported: a migration must not
# change when application code does.
TENANT_SCHEMA_PATTERN = "^tenant_[0-9a-f]{12}_[a-z0-9][a-z0-9_]{0,19}_[0-9a-f]{8}$"

# Both functions start here. Refusals are invalid_parameter_value, so the participant records
# them as permanent failures ("invalid value: ...") rather than retrying them.
CHECK_NAMES = f"""
    IF tenant_schema IS NULL OR tenant_schema !~ '{TENANT_SCHEMA_PATTERN}' THEN
        RAISE EXCEPTION 'not a tenant database schema name: %', quote_literal(tenant_schema)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF tenant_role IS DISTINCT FROM tenant_schema || '_owner' THEN
        RAISE EXCEPTION 'the role of tenant schema % must be %_owner, not %',
            tenant_schema, tenant_schema, quote_literal(tenant_role)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
"""

# SECURITY DEFINER with a fixed search_path: nothing the caller puts on its path (a function
# or operator of the same name) runs with the owner's rights.
FUNCTION_OPTIONS = "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp"

CREATE_TENANT_DATABASE = f"""
CREATE FUNCTION provisioning_create_tenant_database(tenant_schema text, tenant_role text)
RETURNS void {FUNCTION_OPTIONS} AS $function$
BEGIN
    {CHECK_NAMES}
    EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                   'NOBYPASSRLS', tenant_role);
    -- Membership lets the owner of these functions make the schema AUTHORIZATION the role now
    -- and drop both later; it is also how the drop knows the role was made here.
    EXECUTE format('GRANT %I TO CURRENT_USER', tenant_role);
    EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', tenant_schema, tenant_role);
END
$function$"""

DROP_TENANT_DATABASE = f"""
CREATE FUNCTION provisioning_drop_tenant_database(tenant_schema text, tenant_role text)
RETURNS void {FUNCTION_OPTIONS} AS $function$
DECLARE
    owner_of_schema name;
BEGIN
    {CHECK_NAMES}
    -- Either may be gone already (a compensation that ran before): drop what is left. A pair
    -- someone else made is refused as insufficient_privilege, which the participant does not
    -- record: the compensation retries, then is left for an operator, as any failed undo.
    SELECT pg_get_userbyid(nspowner) INTO owner_of_schema
    FROM pg_namespace WHERE nspname = tenant_schema;
    IF FOUND THEN
        IF owner_of_schema <> tenant_role THEN
            RAISE EXCEPTION 'schema % is owned by %, not by %', tenant_schema,
                owner_of_schema, tenant_role USING ERRCODE = 'insufficient_privilege';
        END IF;
        EXECUTE format('DROP SCHEMA %I CASCADE', tenant_schema);
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = tenant_role) THEN
        IF NOT pg_has_role(CURRENT_USER, tenant_role, 'MEMBER') THEN
            RAISE EXCEPTION 'role % was not made by provisioning_create_tenant_database',
                tenant_role USING ERRCODE = 'insufficient_privilege';
        END IF;
        EXECUTE format('DROP ROLE %I', tenant_role);
    END IF;
END
$function$"""

FUNCTIONS = ("provisioning_create_tenant_database(text, text)",
             "provisioning_drop_tenant_database(text, text)")


def upgrade() -> None:
    op.execute(f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DDL_ROLE}') THEN
                CREATE ROLE {DDL_ROLE} NOLOGIN CREATEROLE;
            END IF;
            IF NOT pg_has_role(CURRENT_USER, '{DDL_ROLE}', 'MEMBER') THEN
                GRANT {DDL_ROLE} TO CURRENT_USER;
            END IF;
            EXECUTE format('GRANT CREATE ON DATABASE %I TO {DDL_ROLE}', current_database());
        END
        $$""")
    op.execute(CREATE_TENANT_DATABASE)
    op.execute(DROP_TENANT_DATABASE)
    # A function's new owner needs CREATE on its schema at the moment it is handed over, and not
    # after: the role gets it for the handover only.
    op.execute(_on_schema(f"GRANT CREATE ON SCHEMA {{s}} TO {DDL_ROLE}"))
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} OWNER TO {DDL_ROLE}")
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO provisioning_writer")
    op.execute(_on_schema(f"REVOKE CREATE ON SCHEMA {{s}} FROM {DDL_ROLE}"))
    # DATABASE resources allocated before this revision were made by the service's own login:
    # hand their roles to the functions' owner, or their release could never drop them.
    op.execute(f"""
        DO $$
        DECLARE
            existing name;
        BEGIN
            FOR existing IN
                SELECT r.db_role FROM resources r JOIN pg_roles p ON p.rolname = r.db_role
                WHERE r.resource_type = 'DATABASE'
                  AND r.db_schema ~ '{TENANT_SCHEMA_PATTERN}'
                  AND r.db_role = r.db_schema || '_owner'
                  AND NOT pg_has_role('{DDL_ROLE}', r.db_role, 'MEMBER')
            LOOP
                EXECUTE format('GRANT %I TO {DDL_ROLE}', existing);
            END LOOP;
        END
        $$""")


def downgrade() -> None:
    # The role, its database grant and its memberships in tenant roles are cluster- or
    # database-wide and serve other schemas' functions too: only this schema's functions go.
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION {function}")


def _on_schema(statement: str) -> str:
    """`statement` for the schema the migration runs in (the first of the search path)."""
    quoted = statement.replace("{s}", "%I").replace("'", "''")
    return f"DO $$ BEGIN EXECUTE format('{quoted}', current_schema()); END $$"
