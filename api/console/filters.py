"""The requests table's filters, sort and page, as they travel in a URL's query string.

Parsing is lenient: a value that is not valid is dropped and named in `problems` (the page says
so) instead of failing the page. Times are UTC; `datetime-local` inputs carry none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urlencode

from projection.models import STATUSES

WORKFLOWS = ("tenant", "service", "user", "resource")
# Besides the statuses: requests with leftovers (a compensation given up), and running ones that
# have not moved for the stuck threshold.
NEEDS_ATTENTION, STUCK = "NEEDS_ATTENTION", "STUCK"
STATUS_CHOICES = (*STATUSES, NEEDS_ATTENTION, STUCK)
SORTS = ("created", "updated", "status", "workflow", "tenant", "step")
PAGE_SIZE = 25
_ID_PREFIX = re.compile(r"^[0-9a-f-]{4,36}$")
_TEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Filters:
    status: str | None = None
    workflow: str | None = None
    tenant: str | None = None
    step: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    request_id: str | None = None  # a whole id or its first characters
    sort: str = "created"
    descending: bool = True
    page: int = 1

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> tuple[Filters, list[str]]:
        problems: list[str] = []

        def choice(name: str, allowed: tuple[str, ...]) -> str | None:
            value = (params.get(name) or "").strip()
            if value and value not in allowed:
                problems.append(f"{name} {value!r} is not one of {', '.join(allowed)}")
                return None
            return value or None

        def text(name: str, pattern: re.Pattern[str], what: str) -> str | None:
            value = (params.get(name) or "").strip()
            if name == "requestId":
                value = value.lower()
            if value and not pattern.match(value):
                problems.append(f"{name} {value[:40]!r} is not {what}")
                return None
            return value or None

        def moment(name: str) -> datetime | None:
            value = (params.get(name) or "").strip()
            if not value:
                return None
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                problems.append(f"{name} {value[:40]!r} is not a date and time")
                return None
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed

        page = (params.get("page") or "1").strip()
        filters = cls(
            status=choice("status", STATUS_CHOICES),
            workflow=choice("workflow", WORKFLOWS),
            tenant=text("tenant", _TEXT, "a tenant id"),
            step=text("step", _TEXT, "a step name"),
            since=moment("since"),
            until=moment("until"),
            request_id=text("requestId", _ID_PREFIX, "a request id or its first characters"),
            sort=choice("sort", SORTS) or "created",
            descending=(params.get("dir") or "desc") != "asc",
            page=int(page) if page.isdigit() and 0 < int(page) < 100_000 else 1,
        )
        return filters, problems

    def with_tenant(self, tenant: str | None) -> Filters:
        return replace(self, tenant=tenant)

    def params(self, **changes: object) -> dict[str, str]:
        """The query parameters that give these filters back (defaults left out)."""
        values = {**asdict(self), **changes}
        params = {
            "status": values["status"], "workflow": values["workflow"],
            "tenant": values["tenant"], "step": values["step"],
            "since": _local(values["since"]), "until": _local(values["until"]),
            "requestId": values["request_id"],
            "sort": None if values["sort"] == "created" else values["sort"],
            "dir": None if values["descending"] else "asc",
            "page": None if values["page"] == 1 else str(values["page"]),
        }
        return {k: str(v) for k, v in params.items() if v}

    def query(self, **changes: object) -> str:
        encoded = urlencode(self.params(**changes))
        return f"?{encoded}" if encoded else ""

    def matching(self) -> Filters:
        """The same filters for a bulk action: every page, the default order."""
        return replace(self, page=1, sort="created", descending=True)

    def describe(self) -> str:
        parts = [f"{name} {value}" for name, value in (
            ("status", self.status), ("workflow", self.workflow), ("tenant", self.tenant),
            ("step", self.step), ("request id", self.request_id),
            ("created from", _shown(self.since)), ("created until", _shown(self.until)))
            if value]
        return ", ".join(parts) or "no filter (every request)"


def _shown(moment: datetime | None) -> str | None:
    return None if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _local(moment: datetime | None) -> str | None:
    """The value a `datetime-local` input shows (UTC, to the minute or second)."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    return text.removesuffix(":00") if text.endswith(":00") else text
