"""The console's pure parts: the timeline of a run, the charts' geometry, the filters, which
operator actions apply, the change notifications' payloads, the dead-letter fix form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api import operator_actions
from api.console import charts, timeline
from api.console.dead_letters import changes_from, editable_fields
from api.console.filters import Filters
from api.console.session import csrf_token
from projection.fold import Leftover, RequestRow
from projection.store import MAX_PAYLOAD_BYTES, changed_payloads, parse_changed

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def event(sequence: int, kind: str, ms: int, step: str | None = None, attempt: int | None = None,
          run: int = 1, **payload: object) -> dict:
    return {"sequence": sequence, "run": run, "event_type": f"Provisioning{kind}", "step": step,
            "attempt": attempt, "occurred_at": at(ms), "payload": payload}


def millis(ms: int) -> int:
    return int(at(ms).timestamp() * 1000)


FAILED_RUN = [
    event(1, "Requested", 0, requestedBy="ada"),
    event(2, "StepStarted", 0, "validate-tenant", 1),
    event(3, "StepCompleted", 20, "validate-tenant", 1),
    event(4, "StepStarted", 20, "create-subscription", 1),
    event(5, "StepFailed", 50, "create-subscription", 1, reason="503 from billing",
          transient=True, nextRetryAt=millis(150)),
    event(6, "StepStarted", 160, "create-subscription", 2),
    event(7, "StepCompleted", 200, "create-subscription", 2),
    event(8, "StepStarted", 200, "init-resources", 1),
    event(9, "OperatorAction", 900, operator="ops-grace", action="CANCEL", reason="wrong tier"),
    event(10, "StepFailed", 900, "init-resources", 1, reason="cancelled by ops-grace: wrong tier",
          transient=False),
    event(11, "CompensationStarted", 900, "init-resources", 1),
    event(12, "StepCompensated", 950, "init-resources", 1),
    event(13, "CompensationStarted", 950, "create-subscription", 1),
    event(14, "CompensationFailed", 970, "create-subscription", 1, reason="timeout"),
    event(15, "FailedEvent", 970, reason="cancelled by ops-grace: wrong tier",
          failedStep="init-resources"),
]


def test_a_run_becomes_bars_per_attempt_backoffs_and_compensations_in_reverse() -> None:
    (run,) = timeline.runs(FAILED_RUN, at(5000))
    assert (run.outcome, run.failed_step, run.requested_by) == ("FAILED", "init-resources", "ada")
    assert run.end == at(970)
    assert run.lanes == ["validate-tenant", "create-subscription", "init-resources",
                         "undo init-resources", "undo create-subscription"]
    labels = [b.label(at(5000)) for b in run.bars]
    assert labels == [
        "validate-tenant, attempt 1: completed in 20 ms",
        "create-subscription, attempt 1: failed, retried in 30 ms; 503 from billing",
        "create-subscription: backoff of 110 ms before the next attempt",
        "create-subscription, attempt 2: completed in 40 ms",
        "init-resources, attempt 1: failed in 700 ms; cancelled by ops-grace: wrong tier",
        "undo init-resources, attempt 1: compensated in 50 ms",
        "undo create-subscription, attempt 1: undo given up in 20 ms; timeout",
    ]
    assert run.completed_steps() == 2
    assert [m.label for m in run.markers] == [
        "CANCEL by ops-grace: wrong tier", "failed: cancelled by ops-grace: wrong tier"]


def test_a_running_attempt_is_drawn_to_now_and_an_unanswered_one_ends_with_its_undo() -> None:
    running = timeline.runs(FAILED_RUN[:9], at(1200))[0]
    assert running.outcome == "RUNNING" and running.end is None
    last = running.bars[-1]
    assert (last.lane, last.outcome, last.end) == ("init-resources", "running", None)
    assert last.label(at(1200)) == "init-resources, attempt 1: running for 1.0 s"
    # an attempt that never answered ends, interrupted, where its compensation starts
    unanswered = [*FAILED_RUN[:8], event(9, "CompensationStarted", 600, "init-resources", 1)]
    bar = next(b for b in timeline.runs(unanswered, at(700))[0].bars
               if b.lane == "init-resources")
    assert (bar.outcome, bar.end) == ("interrupted", at(600))


def test_every_run_gets_its_own_timeline() -> None:
    second = [event(16, "OperatorAction", 2000, operator="ops", action="RETRY",
                    reason="quota raised"),
              event(17, "Requested", 2000, run=2, requestedBy="ops"),
              event(18, "StepStarted", 2000, "validate-tenant", 1, run=2),
              event(19, "StepCompleted", 2010, "validate-tenant", 1, run=2),
              event(20, "Succeeded", 2010, run=2, resourceId="r-1")]
    runs = timeline.runs([*FAILED_RUN, *second], at(3000))
    assert [(r.run, r.outcome, r.requested_by) for r in runs] == [
        (1, "FAILED", "ada"), (2, "COMPLETED", "ops")]
    assert runs[0].markers[-1].label == "RETRY by ops: quota raised"  # in the run it ended


def test_the_timeline_chart_places_bars_on_one_time_axis() -> None:
    run = timeline.runs(FAILED_RUN, at(5000))[0]
    chart = charts.timeline_chart(run, at(5000))
    assert chart.title == "Timeline of run 1: 2 steps completed, failed"
    assert len(chart.shapes) == len(run.bars) and len(chart.markers) == 2
    first, last = chart.shapes[0], chart.shapes[-1]
    assert first.x == pytest.approx(charts.LABEL_WIDTH)
    assert last.x + last.width == pytest.approx(charts.LABEL_WIDTH + charts.PLOT_WIDTH)
    assert {s.css for s in chart.shapes} == {"completed", "failed-retried", "backoff", "failed",
                                             "compensated", "undo-given-up"}
    assert [t.label for t in chart.ticks] == ["0 ms", "242 ms", "485 ms", "728 ms", "970 ms"]


@pytest.mark.parametrize("value, whole, top", [
    (18, True, 20), (1, True, 4), (100, False, 100), (67.4, False, 80), (0.3, False, 0.4),
    (3, True, 4), (41, True, 80),
])
def test_axes_end_on_round_numbers(value: float, whole: bool, top: float) -> None:
    assert charts.nice_top(value, whole=whole) == pytest.approx(top)


def test_filters_come_back_from_their_query_and_bad_values_are_named() -> None:
    filters, problems = Filters.parse({
        "status": "FAILED", "workflow": "tenant", "tenant": "acme", "step": "check-quota",
        "since": "2026-12-01T10:00", "requestId": "0AF2", "sort": "updated", "dir": "asc",
        "page": "3"})
    assert problems == []
    assert filters.since == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert filters.request_id == "0af2" and not filters.descending and filters.page == 3
    again, _ = Filters.parse(filters.params())
    assert again == filters
    assert filters.describe() == ("status FAILED, workflow tenant, tenant acme, step check-quota, "
                                  "request id 0af2, created from 2026-12-01 10:00:00 UTC")
    assert "page" not in filters.query(page=1) and "sort=updated" in filters.query()

    bad, problems = Filters.parse({"status": "DONE", "tenant": "a b", "since": "yesterday",
                                   "requestId": "x';--", "page": "-1", "sort": "reason"})
    assert bad == Filters()
    assert len(problems) == 5 and any("status 'DONE'" in p for p in problems)


def row(status: str, leftovers: tuple[str, ...] = ()) -> RequestRow:
    return RequestRow(request_id="r-1", workflow_type="tenant", status=status, created_at=T0,
                      updated_at=T0, uncompensated_steps=tuple(
                          Leftover(step, "gave up", T0) for step in leftovers))


def test_the_actions_that_apply_follow_the_requests_state() -> None:
    def names(r: RequestRow) -> list[tuple[str, str | None]]:
        return [(a.action, a.step) for a in operator_actions.applicable(r)]

    assert names(row("IN_PROGRESS")) == [("CANCEL", None), ("RESUME", None)]
    assert names(row("COMPENSATING")) == [("RESUME", None)]
    assert names(row("FAILED")) == [("RETRY", None)]
    assert names(row("FAILED", ("setup-billing",))) == [
        ("RECOMPENSATE", "setup-billing"), ("RESOLVE", "setup-billing")]
    assert names(row("COMPLETED")) == []
    with pytest.raises(operator_actions.NotApplicable, match="needs a request that is FAILED"):
        operator_actions.check(row("COMPLETED"), "RETRY")
    with pytest.raises(operator_actions.NotApplicable, match="left setup-billing uncompensated"):
        operator_actions.check(row("FAILED", ("setup-billing",)), "RETRY")
    with pytest.raises(operator_actions.NotApplicable, match="uncompensated: setup-billing"):
        operator_actions.check(row("FAILED", ("setup-billing",)), "RESOLVE", "create-tenant")
    operator_actions.check(row("FAILED", ("setup-billing",)), "RESOLVE", "setup-billing")


def test_a_reason_is_checked_as_the_worker_checks_it() -> None:
    assert operator_actions.checked_reason("  wrong tier ") == "wrong tier"
    assert operator_actions.checked_reason("  ") is None
    for bad, required in (("", True), ("x" * 1001, False), ("line\nbreak", False)):
        with pytest.raises(operator_actions.InvalidReason):
            operator_actions.checked_reason(bad, required=required)


def test_change_notifications_name_each_request_and_its_tenants_under_the_size_limit() -> None:
    rows = [RequestRow(request_id=f"{i:08d}-0000-0000-0000-000000000000", workflow_type="user",
                       tenant_id=f"tenant-{i}", submitted_tenant_id=None, created_at=T0,
                       updated_at=T0) for i in range(500)]
    payloads = changed_payloads(rows)
    assert len(payloads) > 1 and all(len(p.encode()) < MAX_PAYLOAD_BYTES for p in payloads)
    changes = [c for p in payloads for c in parse_changed(p) or []]
    assert [(c.request_id, c.tenant_id, c.submitted_tenant_id) for c in changes] == [
        (r.request_id, r.tenant_id, None) for r in rows]
    assert parse_changed("not json") is None
    assert changed_payloads([]) == []


def test_the_csrf_token_belongs_to_one_session() -> None:
    assert csrf_token("token-a") == csrf_token("token-a")
    assert csrf_token("token-a") != csrf_token("token-b")
    assert "token-a" not in csrf_token("token-a")


def test_a_dead_letters_fix_sends_only_the_fields_changed() -> None:
    command = {"requestId": "r-1", "requestedAt": 1700000000000, "email": "grace.at.globex",
               "replyTo": None, "billingInfo": {"currency": "EUR", "paymentMethod": None}}
    assert editable_fields(command) == [
        ("requestId", "r-1"), ("email", "grace.at.globex"), ("replyTo", ""),
        ("billingInfo.currency", "EUR"), ("billingInfo.paymentMethod", "")]
    form = {"csrf": "x", "field:email": "grace@globex.example", "field:replyTo": "",
            "field:billingInfo.currency": "EUR", "field:requestedAt": "0", "field:nope": "1"}
    assert changes_from(form, command) == {"email": "grace@globex.example"}
    # with its schema, numbers and times are not offered (they are not text)
    user = {"requestId": "r-1", "requestedBy": "ada", "replyTo": None,
            "requestedAt": 1700000000000, "tenantId": "t-1", "email": "x", "roleName": "member",
            "knownRun": None, "knownSequence": None}
    assert [name for name, _ in editable_fields(user, "ProvisionUserRequest")] == [
        "requestId", "requestedBy", "replyTo", "tenantId", "email", "roleName"]
    assert changes_from({"field:knownRun": "3"}, user, "ProvisionUserRequest") == {}
