"""The built-in participant on the real PostgreSQL, migrated once per session.

Every test makes its own entities and tenants (unique ids), so tests never see each other's
rows and can run in any order. DATABASE resources are real schemas and roles in the cluster:
the `resource_flows` fixture compensates whatever a test left allocated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from builtin_flows import Flow, resource_flow, service_flow, tenant_flow

from consumer.participants.builtin import BuiltinParticipant
from provisioning.database import create_engine, upgrade
from provisioning.settings import Settings


@pytest.fixture(scope="session")
def registry_engine(base_settings: Settings, db_engine: sa.Engine) -> Iterator[sa.Engine]:
    """The engine the worker would use (pooled), on a database at the latest revision."""
    upgrade(db_engine)
    engine = create_engine(base_settings, pool_size=8, max_overflow=8)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def participant(registry_engine: sa.Engine) -> BuiltinParticipant:
    return BuiltinParticipant(registry_engine)


@pytest.fixture
def tenant(participant: BuiltinParticipant, registry_engine: sa.Engine) -> Flow:
    """A freshly provisioned BUSINESS tenant (its admin is the flow's requestedBy)."""
    return tenant_flow(participant, registry_engine).execute_all()


@pytest.fixture
def cart_subscription(participant: BuiltinParticipant, tenant: Flow) -> Flow:
    """The tenant subscribed to CartService on GOLD."""
    return service_flow(participant, tenant.params["tenantId"]).execute_all()


@pytest.fixture
def resource_flows(participant: BuiltinParticipant) -> Iterator[Callable[..., Flow]]:
    """Makes resource flows; releases what they still hold when the test ends."""
    made: list[Flow] = []

    def make(tenant_id: str, resource_type: str = "DATABASE", **spec: str) -> Flow:
        flow = resource_flow(participant, tenant_id, resource_type, **spec)
        made.append(flow)
        return flow

    yield make
    for flow in made:
        flow.compensate_all()

