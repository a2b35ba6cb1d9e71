"""The registry's configuration: plans, SLA tiers, services, quotas and roles.

Almost every step reads them (a tenant saga looked its plan up three times), and they change
only by migration or an operator's edit. They are kept here for `ttl_s` after they were read:
an edit reaches the participants within that time. Values are plain frozen records, never rows
tied to another call's connection. A name that is not there is looked up again each time:
commands can name anything, and only what exists is kept, so the cache stays as small as the
configuration.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from consumer.participants.builtin.models import (
    Plan,
    PlanService,
    Role,
    Service,
    SlaQuota,
    SlaTier,
)
from consumer.participants.builtin.sql import Registry, compiled

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PlanInfo:
    code: str
    default_sla_tier: str


@dataclass(frozen=True, slots=True)
class TierInfo:
    code: str
    requests_per_second: int
    burst: int


@dataclass(frozen=True, slots=True)
class QuotaInfo:
    sla_tier: str
    resource_type: str
    max_units: int
    unit: str  # the resourceSpec key that measures a request: sizeGb, vcpus


_PLAN = compiled(sa.select(Plan.code, Plan.default_sla_tier)
                 .where(Plan.code == sa.bindparam("code")))
_TIER = compiled(sa.select(SlaTier.code, SlaTier.requests_per_second, SlaTier.burst)
                 .where(SlaTier.code == sa.bindparam("code")))
_DEFAULT_SERVICES = compiled(sa.select(PlanService.service_name)
                             .where(PlanService.plan_code == sa.bindparam("plan"),
                                    PlanService.activated_by_default)
                             .order_by(PlanService.service_name))
_PLAN_INCLUDES = compiled(sa.select(sa.literal(True))
                          .where(PlanService.plan_code == sa.bindparam("plan"),
                                 PlanService.service_name == sa.bindparam("service")))
_SERVICE = compiled(sa.select(Service.name)
                    .where(sa.func.lower(Service.name) == sa.bindparam("name")))
_QUOTA = compiled(sa.select(SlaQuota.sla_tier, SlaQuota.resource_type, SlaQuota.max_units,
                            SlaQuota.unit)
                  .where(SlaQuota.sla_tier == sa.bindparam("tier"),
                         SlaQuota.resource_type == sa.bindparam("type")))
_ROLE = compiled(sa.select(Role.name).where(Role.name == sa.bindparam("name")))


class ReferenceData:
    def __init__(self, ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def plan(self, db: Registry, code: str) -> PlanInfo | None:
        def load() -> PlanInfo | None:
            row = db.execute(_PLAN, {"code": code}).one_or_none()
            return None if row is None else PlanInfo(row.code, row.default_sla_tier)

        return self._cached(("plan", code), load)

    def tier(self, db: Registry, code: str) -> TierInfo | None:
        def load() -> TierInfo | None:
            row = db.execute(_TIER, {"code": code}).one_or_none()
            return None if row is None else TierInfo(row.code, row.requests_per_second,
                                                     row.burst)

        return self._cached(("tier", code), load)

    def default_services(self, db: Registry, plan_code: str) -> tuple[str, ...]:
        """The services a tenant on the plan gets at once, by name."""
        return self._cached(("default-services", plan_code), lambda: tuple(
            db.scalars(_DEFAULT_SERVICES, {"plan": plan_code})))

    def plan_includes(self, db: Registry, plan_code: str, service: str) -> bool:
        return self._cached(("plan-includes", plan_code, service), lambda: bool(
            db.scalar(_PLAN_INCLUDES, {"plan": plan_code, "service": service})))

    def service(self, db: Registry, name: str) -> str | None:
        """The registered name of the service called `name`, matched without regard to case."""
        lowered = name.lower()
        return self._cached(("service", lowered), lambda: db.scalar(_SERVICE, {"name": lowered}))

    def quota(self, db: Registry, tier: str, resource_type: str) -> QuotaInfo | None:
        def load() -> QuotaInfo | None:
            row = db.execute(_QUOTA, {"tier": tier, "type": resource_type}).one_or_none()
            return None if row is None else QuotaInfo(row.sla_tier, row.resource_type,
                                                      row.max_units, row.unit)

        return self._cached(("quota", tier, resource_type), load)

    def role(self, db: Registry, name: str) -> str | None:
        return self._cached(("role", name), lambda: db.scalar(_ROLE, {"name": name}))

    def _cached(self, key: tuple[str, ...], load: Callable[[], T]) -> T:
        now = self._clock()
        with self._lock:
            found = self._entries.get(key)
        if found is not None and now - found[0] < self._ttl_s:
            return found[1]
        value = load()
        if value is not None:
            with self._lock:
                self._entries[key] = (now, value)
        return value
