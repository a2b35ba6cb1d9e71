"""Plans, SLA tiers and the services a plan includes: the registry's configuration.

Almost every step reads them (a tenant saga looked its plan up three times), and they change
only by migration or an operator's edit. They are kept here for `ttl_s` after they were read:
an edit reaches the participants within that time. Values are plain frozen records, never ORM
objects bound to another call's session.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from consumer.participants.builtin.models import Plan, PlanService, SlaTier

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


class ReferenceData:
    def __init__(self, ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def plan(self, session: Session, code: str) -> PlanInfo | None:
        def load() -> PlanInfo | None:
            plan = session.get(Plan, code)
            return None if plan is None else PlanInfo(plan.code, plan.default_sla_tier)

        return self._cached(("plan", code), load)

    def tier(self, session: Session, code: str) -> TierInfo | None:
        def load() -> TierInfo | None:
            tier = session.get(SlaTier, code)
            return None if tier is None else TierInfo(tier.code, tier.requests_per_second,
                                                      tier.burst)

        return self._cached(("tier", code), load)

    def default_services(self, session: Session, plan_code: str) -> tuple[str, ...]:
        """The services a tenant on the plan gets at once, by name."""
        return self._cached(("default-services", plan_code), lambda: tuple(session.scalars(
            sa.select(PlanService.service_name)
            .where(PlanService.plan_code == plan_code, PlanService.activated_by_default)
            .order_by(PlanService.service_name))))

    def _cached(self, key: tuple[str, str], load: Callable[[], T]) -> T:
        now = self._clock()
        with self._lock:
            found = self._entries.get(key)
        if found is not None and now - found[0] < self._ttl_s:
            return found[1]
        value = load()
        with self._lock:
            self._entries[key] = (now, value)
        return value
