"""A built-in step call starts in one statement: its limits, its key's lock, its records.

Revision ID: 0006_step_call_start
Revises: 0005_resource_ddl
Create Date: 2026-12-02

`provisioning_start_step_call(key, timeout_ms)` sets the transaction's statement and lock
timeouts, waits for the advisory lock on the idempotency key, then returns the key's records.
Before, that took two statements (the records had to be read in a statement of their own, whose
snapshot is taken after the lock); in PL/pgSQL each statement of a volatile function takes a
fresh snapshot under READ COMMITTED, so the read after the lock sees a duplicate that committed
while this call waited, in the same round trip.

SECURITY INVOKER (it runs with the caller's rights on `step_executions`); only
`provisioning_writer` may execute it.
"""

from __future__ import annotations

from alembic import op

revision = "0006_step_call_start"
down_revision = "0005_resource_ddl"
branch_labels = None
depends_on = None

SIGNATURE = "provisioning_start_step_call(text, text)"

# The lock's space (1) is `LockSpace.STEP_CALL` of the built-in participant, written out here:
# a migration must not change when application code does.
START_STEP_CALL = """
CREATE FUNCTION provisioning_start_step_call(step_key text, timeout_ms text)
RETURNS TABLE (action text, outcome text, output jsonb, reason text)
LANGUAGE plpgsql VOLATILE AS $function$
BEGIN
    -- statement_timeout applies from the caller's next statement; lock_timeout is read when
    -- the wait below begins.
    PERFORM set_config('statement_timeout', timeout_ms, true),
            set_config('lock_timeout', timeout_ms, true);
    PERFORM pg_advisory_xact_lock(1, hashtext(step_key));
    RETURN QUERY
        SELECT s.action, s.outcome, s.output, s.reason
        FROM step_executions s WHERE s.idempotency_key = step_key;
END
$function$"""


def upgrade() -> None:
    op.execute(START_STEP_CALL)
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO provisioning_writer")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
