"""User workflow: a requester holding `user:manage` adds a person (found or created by e-mail) to
a tenant with a role, queues the invitation e-mail and sets default preferences."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from psycopg.types.json import Jsonb
from sqlalchemy.dialects.postgresql import insert

from consumer.participants.base import Action
from consumer.participants.builtin.context import (
    StepContext,
    StepFunction,
    StepOutput,
    StepRejected,
)
from consumer.participants.builtin.lookups import (
    CREATE_MEMBERSHIP,
    Row,
    active_tenant,
    delete_created,
    delete_unused_user,
    find_user,
    known_role,
    permissions_in,
    user_by_id,
)
from consumer.participants.builtin.models import (
    Invitation,
    Membership,
    User,
    UserPreferences,
)
from consumer.participants.builtin.sql import compiled
from consumer.participants.builtin.sql import insert as insert_row

MANAGE_USERS = "user:manage"
DEFAULT_PREFERENCES = {"locale": "en", "timezone": "UTC"}
DEFAULT_SETTINGS = {"notifications": {"email": True}}


def validate_permission(ctx: StepContext) -> StepOutput:
    tenant = active_tenant(ctx)
    known_role(ctx)
    requester_ref = ctx.param("requestedBy")
    requester = find_user(ctx.db, requester_ref)
    granted = permissions_in(ctx.db, tenant.id, requester.id) if requester else set()
    if MANAGE_USERS not in granted:
        raise StepRejected(
            f"requester {requester_ref} lacks permission {MANAGE_USERS} in tenant {tenant.id}"
        )
    return {}


def resolve_user(ctx: StepContext) -> StepOutput:
    """The user with this e-mail; created under this call's key when there is none."""
    email = ctx.param("email").lower()
    created = ctx.db.scalar(_CREATE_INVITED_USER, {"id": uuid.uuid4(), "email": email,
                                                   "created_by_key": ctx.key})
    user_id = created or ctx.db.execute(_USER_BY_EMAIL, {"email": email}).scalar_one()
    return {"userId": str(user_id), "userCreated": str(created is not None).lower()}


def release_user(ctx: StepContext) -> StepOutput:
    # Only a user this call created, and only while no tenant has taken it up since.
    delete_unused_user(ctx)
    return {}


def add_to_tenant(ctx: StepContext) -> StepOutput:
    tenant = active_tenant(ctx)
    user = _user(ctx)
    role = known_role(ctx)
    existing_role = ctx.db.scalar(_MEMBERSHIP_ROLE, {"tenant_id": tenant.id, "user_id": user.id})
    if existing_role is not None:
        raise StepRejected(f"user {user.id} is already a member of tenant {tenant.id} "
                           f"(role {existing_role})")
    membership_id = uuid.uuid4()
    ctx.db.execute(CREATE_MEMBERSHIP, {"id": membership_id, "tenant_id": tenant.id,
                                           "user_id": user.id, "role_name": role,
                                           "created_by_key": ctx.key})
    return {"membershipId": str(membership_id)}


def remove_from_tenant(ctx: StepContext) -> StepOutput:
    delete_created(ctx, Membership)
    return {}


def send_invitation(ctx: StepContext) -> StepOutput:
    """Queue the invitation in the outbox; a mailer sends `pending` rows."""
    tenant = active_tenant(ctx)
    user = _user(ctx)
    invitation_id = uuid.uuid4()
    ctx.db.execute(_CREATE_INVITATION, {
        "id": invitation_id, "tenant_id": tenant.id, "user_id": user.id,
        "email": user.email or ctx.param("email").lower(), "role_name": known_role(ctx),
        "created_by_key": ctx.key,
    })
    return {"invitationId": str(invitation_id)}


def revoke_invitation(ctx: StepContext) -> StepOutput:
    # Cancelled, not deleted: a mailer may hold the row, and a sent link must stop working.
    ctx.db.execute(_CANCEL_INVITATION, {"key": ctx.key})
    return {}


def init_preferences(ctx: StepContext) -> StepOutput:
    tenant = active_tenant(ctx)
    user = _user(ctx)
    # Kept when the user had them already (e.g. a former member of this tenant).
    ids = {"user_id": user.id, "tenant_id": tenant.id}
    created = ctx.db.scalar(_CREATE_PREFERENCES, {
        **ids, "id": uuid.uuid4(), **DEFAULT_PREFERENCES, "settings": Jsonb(DEFAULT_SETTINGS),
        "created_by_key": ctx.key,
    })
    preferences_id = created or ctx.db.execute(_PREFERENCES, ids).scalar_one()
    return {"preferencesId": str(preferences_id)}


def delete_preferences(ctx: StepContext) -> StepOutput:
    delete_created(ctx, UserPreferences)
    return {}


# ON CONFLICT: when two sagas add the same new person at once, one creates, both find it.
_CREATE_INVITED_USER = compiled(insert(User)
                                .on_conflict_do_nothing(index_elements=[User.email])
                                .returning(User.id),
                                ["id", "email", "created_by_key"])
_USER_BY_EMAIL = compiled(sa.select(User.id).where(User.email == sa.bindparam("email")))
_MEMBERSHIP_ROLE = compiled(sa.select(Membership.role_name)
                            .where(Membership.tenant_id == sa.bindparam("tenant_id"),
                                   Membership.user_id == sa.bindparam("user_id")))
_CREATE_INVITATION = insert_row(Invitation, "id", "tenant_id", "user_id", "email", "role_name",
                                "created_by_key")
_CANCEL_INVITATION = compiled(sa.update(Invitation)
                              .where(Invitation.created_by_key == sa.bindparam("key"),
                                     Invitation.status != "cancelled")
                              .values(status="cancelled", updated_at=sa.func.now()))
_CREATE_PREFERENCES = compiled(insert(UserPreferences)
                               .on_conflict_do_nothing(index_elements=[UserPreferences.user_id,
                                                                       UserPreferences.tenant_id])
                               .returning(UserPreferences.id),
                               ["id", "user_id", "tenant_id", "locale", "timezone", "settings",
                                "created_by_key"])
_PREFERENCES = compiled(sa.select(UserPreferences.id)
                        .where(UserPreferences.user_id == sa.bindparam("user_id"),
                               UserPreferences.tenant_id == sa.bindparam("tenant_id")))


def _user(ctx: StepContext) -> Row:
    user_id = ctx.id_param("userId", "user")
    user = user_by_id(ctx.db, user_id)
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
