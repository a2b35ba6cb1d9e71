"""User workflow on the real registry: a tenant admin adds people; only holders of user:manage
may; compensation removes only what the run created."""

from __future__ import annotations

import sqlalchemy as sa
from builtin_flows import Flow, count_rows, tenant_flow, unique, user_flow

from consumer.participants.base import Outcome
from consumer.participants.builtin import BuiltinParticipant
from consumer.participants.builtin.registry import rows_created_by


def test_steps_in_order_add_a_new_user_with_invitation_and_preferences(
    participant: BuiltinParticipant, registry_engine: sa.Engine, tenant: Flow
) -> None:
    tenant_id = tenant.params["tenantId"]
    flow = user_flow(participant, tenant_id, tenant.params["requestedBy"],
                     email=f"{unique('Jane.Doe')}@Acme.Example")
    flow.execute_all()

    user_id = flow.params["userId"]
    email = flow.params["email"].lower()
    assert flow.params["userCreated"] == "true"
    assert count_rows(registry_engine, "users", id=user_id, email=email) == 1
    assert count_rows(registry_engine, "memberships", tenant_id=tenant_id, user_id=user_id,
                      role_name="member") == 1
    assert count_rows(registry_engine, "invitations", id=flow.params["invitationId"],
                      email=email, status="pending") == 1
    assert count_rows(registry_engine, "user_preferences", id=flow.params["preferencesId"],
                      user_id=user_id, tenant_id=tenant_id, locale="en") == 1


def test_compensation_in_reverse_removes_the_new_user_and_cancels_the_invitation(
    participant: BuiltinParticipant, registry_engine: sa.Engine, tenant: Flow
) -> None:
    flow = user_flow(participant, tenant.params["tenantId"], tenant.params["requestedBy"])
    flow.execute_all()

    flow.compensate_all()

    assert count_rows(registry_engine, "users", id=flow.params["userId"]) == 0
    assert count_rows(registry_engine, "memberships", user_id=flow.params["userId"]) == 0
    assert count_rows(registry_engine, "user_preferences", user_id=flow.params["userId"]) == 0
    # The invitation went with its user; while the user still existed it was cancelled.
    assert count_rows(registry_engine, "invitations", id=flow.params["invitationId"]) == 0
    assert all(rows_created_by(registry_engine, flow.key(step)) == {} for step in flow.steps)


def test_an_invitation_is_cancelled_not_deleted_when_the_user_stays(
    participant: BuiltinParticipant, registry_engine: sa.Engine, tenant: Flow
) -> None:
    flow = user_flow(participant, tenant.params["tenantId"], tenant.params["requestedBy"])
    flow.execute_all()

    assert flow.compensate("send-invitation").outcome is Outcome.SUCCEEDED

    assert count_rows(registry_engine, "invitations", id=flow.params["invitationId"],
                      status="cancelled") == 1


def test_an_existing_user_is_found_by_email_and_kept_on_compensation(
    participant: BuiltinParticipant, registry_engine: sa.Engine, tenant: Flow
) -> None:
    admin = tenant.params["requestedBy"]
    email = f"{unique('sam')}@acme.example"
    user_flow(participant, tenant.params["tenantId"], admin, email=email).execute_all()
    other_tenant = _second_tenant_of(participant, registry_engine, admin)

    flow = user_flow(participant, other_tenant, admin, email=email.upper())
    flow.execute_all()
    assert flow.params["userCreated"] == "false"
    flow.compensate_all()

    assert count_rows(registry_engine, "users", email=email) == 1
    assert count_rows(registry_engine, "memberships", tenant_id=other_tenant) == 1  # the admin


def test_a_requester_without_user_manage_is_refused(
    participant: BuiltinParticipant, tenant: Flow
) -> None:
    member = user_flow(participant, tenant.params["tenantId"], tenant.params["requestedBy"])
    member.execute_all()
    member_id = member.params["userId"]  # a plain member, identified by its user id

    outcome = user_flow(participant, tenant.params["tenantId"], member_id).execute(
        "validate-permission"
    )

    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    assert outcome.reason == (
        f"requester {member_id} lacks permission user:manage in tenant {tenant.params['tenantId']}"
    )


def test_an_unknown_requester_or_an_admin_of_another_tenant_is_refused(
    participant: BuiltinParticipant, registry_engine: sa.Engine, tenant: Flow
) -> None:
    stranger = user_flow(participant, tenant.params["tenantId"], unique("nobody"))
    assert stranger.execute("validate-permission").outcome is Outcome.PERMANENT_FAILURE

    other_admin = _tenant_admin_elsewhere(participant, registry_engine)
    outcome = user_flow(participant, tenant.params["tenantId"], other_admin).execute(
        "validate-permission"
    )
    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    assert "lacks permission user:manage" in outcome.reason


def test_unknown_role_and_an_existing_member_are_refused(
    participant: BuiltinParticipant, tenant: Flow
) -> None:
    admin = tenant.params["requestedBy"]
    unknown_role = user_flow(participant, tenant.params["tenantId"], admin, role="overlord")
    outcome = unknown_role.execute("validate-permission")
    assert (outcome.outcome, outcome.reason) == (Outcome.PERMANENT_FAILURE, "unknown role overlord")

    member = user_flow(participant, tenant.params["tenantId"], admin).execute_all()
    again = user_flow(participant, tenant.params["tenantId"], admin, email=member.params["email"])
    again.execute_all(until="resolve-user")
    outcome = again.execute("add-to-tenant")
    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    assert "already a member" in outcome.reason


def _second_tenant_of(participant: BuiltinParticipant, engine: sa.Engine, admin: str) -> str:
    return tenant_flow(participant, engine, requested_by=admin).execute_all().params["tenantId"]


def _tenant_admin_elsewhere(participant: BuiltinParticipant, engine: sa.Engine) -> str:
    return tenant_flow(participant, engine).execute_all().params["requestedBy"]
