"""Built-in participants: reference implementations of every step of the four workflows, backed
by the service's own registry tables in PostgreSQL (see `models` and migration 0001).

- `participant`: `BuiltinParticipant`, dispatch by (workflow, step, action), idempotency;
- `tenant`, `service`, `user`, `resource`: the steps of each workflow and their compensations;
- `registry`: what operators and tests do to the registry directly (e.g. add an entity).

How users are identified: a user row has its own uuid `id`, and optionally an `email` (people
added by the user workflow) and an `external_id` (the `requestedBy` of commands). A requester is
looked up by `external_id`, then by `id` when `requestedBy` is a uuid; the tenant workflow's
create-admin-role creates the requester's user (by `external_id`) when it does not exist.
"""

from consumer.participants.builtin.participant import BuiltinParticipant

__all__ = ["BuiltinParticipant"]
