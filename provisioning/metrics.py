"""The service's Prometheus metrics, all in one place, with the seed's meaning.

Labels are bounded sets only: workflow type, step, status, topic, partition, consumer group.
Never a tenant or a request id (unbounded cardinality): those go into the logs.
Processes serve them with `provisioning.ops.serve_ops` on `--metrics-port`.

`provisioning worker --processes N` runs N worker processes under a supervisor that serves one
port for all (prometheus_client's multiprocess mode, `consumer/supervisor.py`): counters and
histograms add up over the members, and each gauge says below how its members' values combine
(`live*`: only members alive right now count).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

REQUESTS = Counter(
    "provisioning_requests", "Runs of provisioning requests started, by workflow type.",
    ["workflow_type"])
DURATION = Histogram(
    "provisioning_duration_seconds",
    "Time from a run's start to its end; status is success, refused (a business rule said no "
    "at a validation or check step), cancelled (by an operator) or failed (a system failure).",
    ["workflow_type", "status"], buckets=DURATION_BUCKETS)
STEP_DURATION = Histogram(
    "provisioning_step_duration_seconds",
    "Time of one step attempt (or compensation attempt) from start to answer; status is "
    "success, transient_failure, permanent_failure or timeout.",
    ["workflow_type", "step", "status"], buckets=STEP_BUCKETS)
RETRIES = Counter(
    "provisioning_retries", "Step attempts that failed and will be tried again.",
    ["workflow_type", "step"])
OUTCOMES = Counter(
    "provisioning_outcomes",
    "Runs ended, by outcome: succeeded, refused (a participant's permanent refusal at a "
    "validation or check step: a business rule), cancelled (an operator) or failed (everything "
    "else: what the success-rate alert counts).", ["workflow_type", "outcome"])
FAILURES = Counter(
    "provisioning_failures",
    "Runs that did not succeed, by the step that failed them and a bounded reason code "
    "(refused, participant_refused, retries_exhausted, deadline_exceeded, cancelled, "
    "unrecordable_answer, contract_broken, unknown); the free-text reasons are in the logs "
    "and the projection.", ["workflow_type", "failed_step", "code"])
COMPENSATIONS = Counter(
    "provisioning_compensations", "Completed steps undone.", ["workflow_type", "step"])
COMPENSATION_FAILURES = Counter(
    "provisioning_compensation_failures",
    "Compensations given up after their retries (or an operator's re-attempt) failed: each is "
    "a leftover an operator must clean (view provisioning_needs_attention).",
    ["workflow_type", "step"])
ACTIVE = Gauge(
    "provisioning_active_workflows", "Sagas in progress or compensating on this process.",
    ["workflow_type"], multiprocess_mode="livesum")
STUCK = Gauge(
    "provisioning_stuck_workflows",
    "Sagas on this process that have not changed for longer than the stuck threshold.",
    ["workflow_type"], multiprocess_mode="livesum")
DLQ = Counter(
    "provisioning_dlq_messages", "Commands sent to the dead-letter topic, by error class.",
    ["error_class"])
# A partition's lag is set by whichever member owns it; one that lost the partition keeps its
# last value, so the most recent reading is the owner's.
CONSUMER_LAG = Gauge(
    "provisioning_consumer_lag", "Records behind the end of each assigned partition.",
    ["group", "topic", "partition"], multiprocess_mode="livemostrecent")
COMMIT_SECONDS = Histogram(
    "provisioning_transaction_commit_seconds",
    "Time to commit one worker transaction (offsets and produced records).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
TRANSACTIONS = Counter(
    "provisioning_transactions",
    "Worker transactions committed with work in them (records or consumed offsets).", [])
RECORDS_WRITTEN = Counter(
    "provisioning_records_written",
    "Records the worker produced in its committed transactions (events, state, step requests, "
    "replies, dead letters).", [])
RECORD_BYTES_WRITTEN = Counter(
    "provisioning_record_bytes_written",
    "Bytes of record values the worker produced in its committed transactions.", [])
PROJECTED = Counter(
    "provisioning_projected_events", "Events written into the projection.", [])
OPERATOR_ACTIONS = Counter(
    "provisioning_operator_actions", "Operator actions applied, by action.", ["action"])
PROJECTOR_HELD_PARTITIONS = Gauge(
    "provisioning_projector_held_partitions",
    "Events partitions the projector holds at a record whose writer schema it does not know: "
    "nothing at or after it is projected until a projector with that schema reads it "
    "(readiness is false while any is held).", ["group"])
PROJECTOR_UNPROJECTABLE = Counter(
    "provisioning_projector_unprojectable_records",
    "Records of the events topic the projector could not project, by kind: unknown_schema "
    "(its partition is held, counted once per hold), malformed or not_an_event (sent to the "
    "events dead-letter topic).", ["group", "kind"])

# --- blast radius: what one bad input cost, and that it cost no one else ----------------------
REJECTED_REPLIES = Counter(
    "provisioning_rejected_replies",
    "Step replies dropped because they answer no attempt sent to a Kafka participant and "
    "still waiting: reason is undecodable, unknown_saga, not_awaited, not_remote, "
    "wrong_idempotency_key or wrong_participant.", ["reason"])
SAGA_FAULTS = Counter(
    "provisioning_saga_faults",
    "Saga inputs dropped because even their fallback could not be decided or recorded (a "
    "command that cannot is dead-lettered, an answer becomes a permanent failure).", ["input"])
REPLIES_DROPPED = Counter(
    "provisioning_replies_dropped",
    "Seed responses not sent because the command's replyTo may not or cannot be written.", [])
CORRUPT_STATE_RECORDS = Counter(
    "provisioning_corrupt_state_records",
    "Records of the state topic that are not a readable SagaState: skipped at restore.", [])
RESTORE_FAILURES = Counter(
    "provisioning_state_restore_failures",
    "Restores of an assigned state partition that failed (no reachable leader, or the read "
    "did not reach the end in time): the partition waits, paused, and is tried again.", [])
UNRESTORED_PARTITIONS = Gauge(
    "provisioning_unrestored_partitions",
    "Assigned partitions whose states could not be restored yet (readiness is false while "
    "any is): their commands and replies wait in Kafka.", [],
    multiprocess_mode="livesum")
PARTITION_STALLS = Counter(
    "provisioning_partition_stalls",
    "Times an assigned partition had unread records and made no progress for the stall time "
    "while the worker was not holding back.", ["topic"])
STALLED_PARTITIONS = Gauge(
    "provisioning_stalled_partitions",
    "Assigned partitions stalled right now (readiness is false while any is).", [],
    multiprocess_mode="livesum")

# Supervisor of `provisioning worker --processes N`: registered on the registry it serves only.
MEMBER_RESTARTS = Counter(
    "provisioning_worker_member_restarts",
    "Worker processes of a supervisor restarted after they exited unasked, by member index.",
    ["member"], registry=None)

# Gauges computed when scraped (`set_function`): a member of a multi-process worker copies their
# values into the shared files every second, since the supervisor reads only those files.
SCRAPE_TIME_GAUGES = (ACTIVE, STUCK)

ALL = (REQUESTS, DURATION, STEP_DURATION, RETRIES, OUTCOMES, FAILURES, COMPENSATIONS,
       TRANSACTIONS, RECORDS_WRITTEN, RECORD_BYTES_WRITTEN,
       COMPENSATION_FAILURES, ACTIVE, STUCK, DLQ,
       CONSUMER_LAG, COMMIT_SECONDS, PROJECTED, OPERATOR_ACTIONS,
       REJECTED_REPLIES, SAGA_FAULTS, REPLIES_DROPPED, CORRUPT_STATE_RECORDS, PARTITION_STALLS,
       STALLED_PARTITIONS, PROJECTOR_HELD_PARTITIONS, PROJECTOR_UNPROJECTABLE, MEMBER_RESTARTS)


def exported_names() -> set[str]:
    """The series names Prometheus scrapes (counters get `_total`, histograms `_bucket`...)."""
    names: set[str] = set()
    for metric in ALL:
        for family in metric.describe():
            for suffix in _SUFFIXES[family.type]:
                names.add(family.name + suffix)
    return names


_SUFFIXES = {"counter": ("_total",), "gauge": ("",),
             "histogram": ("_bucket", "_sum", "_count")}
