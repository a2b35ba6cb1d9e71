"""User workflow: a requester holding `user:manage` adds a person (found or created by e-mail) to
a tenant with a role, queues the invitation e-mail and sets default preferences."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from consumer.participants.base import Action
from consumer.participants.builtin.context import (
    StepContext,
    StepFunction,
    StepOutput,
    StepRejected,
)
from consumer.participants.builtin.lookups import (
    active_tenant,
    delete_created,
    find_user,
    known_role,
    permissions_in,
)
from consumer.participants.builtin.models import (
    Invitation,
    Membership,
    User,
    UserPreferences,
)

MANAGE_USERS = "user:manage"
DEFAULT_PREFERENCES = {"locale": "en", "timezone": "UTC"}
DEFAULT_SETTINGS = {"notifications": {"email": True}}


def validate_permission(ctx: StepContext) -> StepOutput:
    tenant = active_tenant(ctx)
    known_role(ctx)
    requester_ref = ctx.param("requestedBy")
    requester = find_user(ctx.session, requester_ref)
    granted = permissions_in(ctx.session, tenant.id, requester.id) if requester else set()
    if MANAGE_USERS not in granted:
        raise StepRejected(
            f"requester {requester_ref} lacks permission {MANAGE_USERS} in tenant {tenant.id}"
        )
    return {}


def resolve_user(ctx: StepContext) -> StepOutput:
    """The user with this e-mail; created under this call's key when there is none."""
    email = ctx.param("email").lower()
    # ON CONFLICT: when two sagas add the same new person at once, one creates, both find it.
    created = ctx.session.execute(
        insert(User)
        .values(id=uuid.uuid4(), email=email, created_by_key=ctx.key)
        .on_conflict_do_nothing(index_elements=[User.email])
        .returning(User.id)
    ).scalar_one_or_none()
    user_id = created or ctx.session.scalars(sa.select(User.id).where(User.email == email)).one()
    return {"userId": str(user_id), "userCreated": str(created is not None).lower()}


def release_user(ctx: StepContext) -> StepOutput:
    # Only a user this call created, and only while no tenant has taken it up since.
    ctx.session.execute(
        sa.delete(User).where(
            User.created_by_key == ctx.key,
            ~sa.exists().where(Membership.user_id == User.id),
        )
    )
    return {}


def add_to_tenant(ctx: StepContext) -> StepOutput:
    tenant = active_tenant(ctx)
    user = _user(ctx)
    role = known_role(ctx)
    existing = ctx.session.scalars(
        sa.select(Membership).where(
            Membership.tenant_id == tenant.id, Membership.user_id == user.id
        )
    ).one_or_none()
    if existing is not None:
        raise StepRejected(f"user {user.id} is already a member of tenant {tenant.id} "
                           f"(role {existing.role_name})")
    membership = Membership(
        id=uuid.uuid4(), tenant_id=tenant.id, user_id=user.id, role_name=role.name,
        created_by_key=ctx.key,
    )
    ctx.session.add(membership)
    return {"membershipId": str(membership.id)}


def remove_from_tenant(ctx: StepContext) -> StepOutput:
    delete_created(ctx, Membership)
    return {}


def send_invitation(ctx: StepContext) -> StepOutput:
    """Queue the invitation in the outbox; a mailer sends `pending` rows."""
    tenant = active_tenant(ctx)
    user = _user(ctx)
    invitation = Invitation(
        id=uuid.uuid4(), tenant_id=tenant.id, user_id=user.id,
        email=user.email or ctx.param("email").lower(), role_name=known_role(ctx).name,
        created_by_key=ctx.key,
    )
    ctx.session.add(invitation)
    return {"invitationId": str(invitation.id)}


def revoke_invitation(ctx: StepContext) -> StepOutput:
    # Cancelled, not deleted: a mailer may hold the row, and a sent link must stop working.
    ctx.session.execute(
        sa.update(Invitation)
        .where(Invitation.created_by_key == ctx.key, Invitation.status != "cancelled")
        .values(status="cancelled", updated_at=sa.func.now())
    )
    return {}


def init_preferences(ctx: StepContext) -> StepOutput:
    tenant = active_tenant(ctx)
    user = _user(ctx)
    # Kept when the user had them already (e.g. a former member of this tenant).
    created = ctx.session.execute(
        insert(UserPreferences)
        .values(id=uuid.uuid4(), user_id=user.id, tenant_id=tenant.id, **DEFAULT_PREFERENCES,
                settings=DEFAULT_SETTINGS, created_by_key=ctx.key)
        .on_conflict_do_nothing(index_elements=[UserPreferences.user_id, UserPreferences.tenant_id])
        .returning(UserPreferences.id)
    ).scalar_one_or_none()
    preferences_id = created or ctx.session.scalars(
        sa.select(UserPreferences.id).where(
            UserPreferences.user_id == user.id, UserPreferences.tenant_id == tenant.id
        )
    ).one()
    return {"preferencesId": str(preferences_id)}


def delete_preferences(ctx: StepContext) -> StepOutput:
    delete_created(ctx, UserPreferences)
    return {}


def _user(ctx: StepContext) -> User:
    user_id = ctx.id_param("userId", "user")
    user = ctx.session.get(User, user_id)
    if user is None:
        raise StepRejected(f"unknown user {user_id}")
    return user


STEPS: dict[tuple[str, Action], StepFunction] = {
    ("validate-permission", Action.EXECUTE): validate_permission,
    ("resolve-user", Action.EXECUTE): resolve_user,
    ("resolve-user", Action.COMPENSATE): release_user,
    ("add-to-tenant", Action.EXECUTE): add_to_tenant,
    ("add-to-tenant", Action.COMPENSATE): remove_from_tenant,
    ("send-invitation", Action.EXECUTE): send_invitation,
    ("send-invitation", Action.COMPENSATE): revoke_invitation,
    ("init-preferences", Action.EXECUTE): init_preferences,
    ("init-preferences", Action.COMPENSATE): delete_preferences,
}
