"""The REST API: the seed's endpoints on FastAPI, run by `provisioning api` under uvicorn.

    POST /api/v1/provisioning/{tenant,service,user,resource}   202 + requestId (200 with ?wait=)
    GET  /api/v1/provisioning/{requestId}/status
    GET  /api/v1/provisioning/{requestId}/events               the audit trail
    POST /api/v1/provisioning/{requestId}/retry                resend a FAILED request
    POST /api/v1/provisioning/{requestId}/cancel|resume        operators: in-flight requests
    POST /api/v1/provisioning/{requestId}/recompensate|resolve operators: leftovers of a FAILED one
    GET  /console                                             the operators' web console

Every call needs a bearer token (`api.auth`); creating a tenant needs provisioning:onboard
besides provisioning:submit. X-Tenant-ID is required except for tenant creation and must
equal the token's tenant; a request of another tenant is a 404, never a 403,
so request ids do not leak. An accepted request is visible at once as PENDING: the row is
written before the command is published, and removed again if publishing fails.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api import operator_actions, problems
from api.auth import (
    ONBOARD,
    OPERATE,
    READ,
    RETRY,
    SUBMIT,
    Caller,
    KeysUnavailable,
    TokenVerifier,
    Unauthenticated,
)
from api.bodies import (
    Accepted,
    AuditEvent,
    AuditTrail,
    DeadLetterSummary,
    OperatorRequest,
    Recompensation,
    Redrive,
    Redriven,
    RequestStatus,
    Resolution,
    ResourceRequest,
    ServiceRequest,
    TenantRequest,
    UncompensatedStep,
    UserRequest,
)
from api.notifications import ProjectionListener
from api.problems import Problem
from api.publishing import AsyncCommandPublisher
from consumer.commands import InvalidCommand, command_from_params, to_start_command
from producers.commands import PublishError
from projection import store
from projection.fold import RequestRow
from provisioning.database import create_engine, database_answers
from provisioning.errors import ProvisioningError, TransientError
from provisioning.kafka_access import KafkaAccessDenied
from provisioning.ops import start_ops
from provisioning.settings import Settings, get_settings
from provisioning.topics import ReplyTopicRule, TopicLayout
from sagas import payload_hash

PREFIX = "/api/v1/provisioning"
T = TypeVar("T")
bearer = HTTPBearer(auto_error=False, description="A JWT from the platform's identity provider")


class Services:
    """What the endpoints share for the life of the process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reply_topics = ReplyTopicRule(TopicLayout(settings.topic_prefix),
                                           settings.reply_topic_pattern)
        self.engine = create_engine(settings, pool_size=8, max_overflow=4)
        self.publisher = AsyncCommandPublisher(settings)
        self.listener = ProjectionListener(settings.database_url_plain()).start()
        self.ops = start_ops(settings.metrics_port, self.readiness)

    def readiness(self) -> tuple[bool, str]:
        if not database_answers(self.engine):
            return False, "PostgreSQL does not answer"
        if not self.listener.listening.is_set():
            return False, "not listening to the projection's notifications yet"
        return True, "ready"

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(connection, *args)` in one transaction, off the event loop."""
        def call() -> T:
            with self.engine.begin() as conn:
                return fn(conn, *args)
        try:
            return await run_in_threadpool(call)
        except sa.exc.OperationalError:
            raise Problem(503, "the status database is unavailable; try again shortly",
                          headers={"Retry-After": "2"}) from None

    def close(self) -> None:
        if self.ops is not None:
            self.ops.stop()
        self.listener.stop()
        self.publisher.close()
        self.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    verifier = TokenVerifier(settings)  # fails at start-up when no keys are configured

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = Services(settings)
        yield
        app.state.services.close()

    app = FastAPI(title="Provisioning Service", version="1",
                  description="Submit provisioning requests and follow them.", lifespan=lifespan)
    app.state.verifier = verifier
    # Set when the server is asked to stop, so long-lived responses (the console's live
    # streams) end and let the shutdown finish.
    app.state.closing = threading.Event()
    problems.install(app)
    app.add_middleware(problems.BodySizeLimit, max_bytes=settings.max_command_bytes)

    def submit_route(workflow: str, body_type: type) -> None:
        async def submit(body: Any, request: Request, response: Response, who: CallerDep,
                         svc: ServicesDep, x_tenant_id: TenantHeader = None, wait: Wait = 0,
                         traceparent: Traceparent = None) -> Any:
            return await _submit(svc, workflow, body, request, response, who, x_tenant_id,
                                 wait, traceparent)

        submit.__annotations__["body"] = body_type
        app.post(f"{PREFIX}/{workflow}", status_code=202, name=f"submit_{workflow}",
                 summary=f"Provision a {workflow}", response_model=Accepted | RequestStatus,
                 responses={200: {"model": RequestStatus}})(submit)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response("ok\n", media_type="text/plain")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(svc: ServicesDep) -> Response:
        ready, why = await run_in_threadpool(svc.readiness)
        return Response(why + "\n", status_code=200 if ready else 503, media_type="text/plain")

    for workflow, body_type in (("tenant", TenantRequest), ("service", ServiceRequest),
                                ("user", UserRequest), ("resource", ResourceRequest)):
        submit_route(workflow, body_type)

    @app.get(f"{PREFIX}/{{request_id}}/status", response_model=RequestStatus)
    async def status(request_id: uuid.UUID, who: CallerDep, svc: ServicesDep,
                     x_tenant_id: TenantHeader = None) -> RequestStatus:
        _require(who, READ)
        _check_tenant_header(who, x_tenant_id, required=True)
        return _status(await _visible_row(svc, who, str(request_id)))

    @app.get(f"{PREFIX}/{{request_id}}/events", response_model=AuditTrail)
    async def events(request_id: uuid.UUID, who: CallerDep, svc: ServicesDep,
                     x_tenant_id: TenantHeader = None) -> AuditTrail:
        _require(who, READ)
        _check_tenant_header(who, x_tenant_id, required=True)
        row = await _visible_row(svc, who, str(request_id))
        audit = await svc.db(store.read_events, row.request_id)
        return AuditTrail(requestId=row.request_id, events=[
            AuditEvent(sequence=e["sequence"], run=e["run"], type=e["event_type"],
                       step=e["step"], attempt=e["attempt"], occurredAt=e["occurred_at"],
                       details=_details(e["payload"])) for e in audit])

    @app.post(f"{PREFIX}/{{request_id}}/retry", status_code=202, response_model=Accepted)
    async def retry(request_id: uuid.UUID, request: Request, who: CallerDep, svc: ServicesDep,
                    x_tenant_id: TenantHeader = None, traceparent: Traceparent = None
                    ) -> Accepted:
        _require(who, RETRY)
        _check_tenant_header(who, x_tenant_id, required=True)
        row = await _visible_row(svc, who, str(request_id))
        if row.status != "FAILED":
            raise Problem(409, f"only FAILED requests can be retried; {row.request_id} is "
                               f"{row.status}", currentStatus=row.status)
        _check_no_leftovers(row)
        record_name, command = command_from_params(
            row.workflow_type, row.request_id, row.params, reply_to=row.reply_to,
            requested_at=_now_ms(), known_run=row.run, known_sequence=row.last_sequence)
        await _publish(svc, record_name, command, traceparent)
        await svc.db(store.mark_retrying, row.request_id, datetime.now(UTC))
        return _accepted(request, row.request_id, "PENDING")

    def operator_route(action: str, summary: str) -> None:
        async def act(request_id: uuid.UUID, request: Request, who: CallerDep,
                      svc: ServicesDep, body: OperatorRequest | None = None,
                      x_tenant_id: TenantHeader = None) -> Accepted:
            row = await _operator_target(svc, who, x_tenant_id, str(request_id))
            await send_operator_action(svc, row, who, action, body.reason if body else None)
            return _accepted(request, row.request_id, row.status)

        app.post(f"{PREFIX}/{{request_id}}/{action.lower()}", status_code=202,
                 response_model=Accepted, summary=summary, name=f"operator_{action.lower()}",
                 tags=["operators"])(act)

    def leftover_route(action: str, body_type: type, summary: str) -> None:
        async def act(request_id: uuid.UUID, body: Any, request: Request, who: CallerDep,
                      svc: ServicesDep, x_tenant_id: TenantHeader = None) -> Accepted:
            row = await _operator_target(svc, who, x_tenant_id, str(request_id))
            await send_operator_action(svc, row, who, action, body.reason, body.step)
            return _accepted(request, row.request_id, row.status)

        act.__annotations__["body"] = body_type
        app.post(f"{PREFIX}/{{request_id}}/{action.lower()}", status_code=202,
                 response_model=Accepted, summary=summary, name=f"operator_{action.lower()}",
                 tags=["operators"])(act)

    @app.get("/api/v1/admin/dlq", response_model=list[DeadLetterSummary], tags=["operators"],
             summary="Dead-lettered commands, oldest first, with the reason")
    async def dead_letters(who: CallerDep, svc: ServicesDep, x_tenant_id: TenantHeader = None,
                           limit: Annotated[int, Query(ge=1, le=1000)] = 100
                           ) -> list[DeadLetterSummary]:
        from provisioning.dlq_admin import read_dead_letters

        _require(who, OPERATE)
        _check_tenant_header(who, x_tenant_id, required=True)
        letters = await run_in_threadpool(read_dead_letters, svc.settings, limit=limit)
        return [_summary(letter) for letter in letters]

    @app.post("/api/v1/admin/dlq/{partition}/{offset}/redrive", response_model=Redriven,
              status_code=202, tags=["operators"],
              summary="Fix a dead-lettered command and send it again")
    async def redrive(partition: Annotated[int, Path(ge=0)], offset: Annotated[int, Path(ge=0)],
                      who: CallerDep, svc: ServicesDep, body: Redrive | None = None,
                      x_tenant_id: TenantHeader = None) -> Redriven:
        from provisioning import dlq_admin

        _require(who, OPERATE)
        _check_tenant_header(who, x_tenant_id, required=True)
        ref = f"{partition}:{offset}"
        try:
            request_id = await run_in_threadpool(
                dlq_admin.find_and_redrive, svc.settings, ref,
                body.changes if body else {}, who.subject)
        except dlq_admin.DeadLetterNotFound as exc:
            raise Problem(404, str(exc)) from None
        except ProvisioningError as exc:
            raise Problem(422, f"not redriven: {exc}") from None
        return Redriven(requestId=request_id, redrivenFrom=ref)

    from api.console import install as install_console

    install_console(app)
    operator_route("CANCEL", "Cancel an in-flight request; what completed is compensated")
    operator_route("RESUME", "Start a fresh attempt of the step a stuck request waits on")
    leftover_route("RECOMPENSATE", Recompensation,
                   "Try again to undo an uncompensated step of a FAILED request")
    leftover_route("RESOLVE", Resolution,
                   "Record that an uncompensated step was cleaned up by hand")
    return app


async def _caller(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None,
                                                      Depends(bearer)]) -> Caller:
    if credentials is None:
        raise Problem(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    try:
        # In a thread: verifying may fetch the identity provider's keys, and a slow provider
        # must not hold up every other request (nor /healthz) on the event loop.
        return await run_in_threadpool(request.app.state.verifier.verify,
                                       credentials.credentials)
    except Unauthenticated as exc:
        raise Problem(401, str(exc),
                      headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
    except KeysUnavailable as exc:
        raise Problem(503, f"the token could not be checked: {exc}",
                      headers={"Retry-After": "5"}) from None


def _services(request: Request) -> Services:
    return request.app.state.services


CallerDep = Annotated[Caller, Depends(_caller)]
ServicesDep = Annotated[Services, Depends(_services)]
TenantHeader = Annotated[str | None, Header(alias="X-Tenant-ID", max_length=128)]
Wait = Annotated[float, Query(ge=0, le=600, description="Seconds to wait for the outcome")]
Traceparent = Annotated[str | None, Header(max_length=128)]


async def _submit(svc: Services, workflow: str, body: Any, request: Request, response: Response,
                  who: Caller, x_tenant_id: str | None, wait: float,
                  traceparent: str | None) -> Accepted | RequestStatus:
    _require(who, SUBMIT)
    if workflow == "tenant":  # its submitter becomes the new tenant's admin
        _require(who, ONBOARD)
    tenant_id = _tenant_of_submission(workflow, body, who, x_tenant_id)
    request_id = str(body.requestId or uuid.uuid4())
    record_name, command = _command(workflow, body, request_id, who, tenant_id)
    try:
        start = to_start_command(record_name, command)
    except InvalidCommand as exc:
        raise Problem(422, str(exc)) from None
    _check_reply_topic(svc, start.reply_to)
    now = datetime.now(UTC)
    row = RequestRow(
        request_id=request_id, workflow_type=workflow, tenant_id=start.tenant_id,
        submitted_tenant_id=who.tenant_id, requested_by=who.subject,
        payload_hash=payload_hash(workflow, start.params), params=dict(start.params),
        reply_to=start.reply_to, created_at=now, updated_at=now,
    )
    acceptance = await svc.db(store.accept, row)
    if acceptance.conflicts_with(row.payload_hash) or not visible_to(acceptance.row, who):
        raise Problem(409, f"requestId {request_id} was already used for a different request; "
                           "use a new requestId", requestId=request_id)
    known = acceptance.row
    response.headers["Location"] = _url(request, request_id, "status")
    if not acceptance.created and known.status == "COMPLETED":
        # The seed: already completed, return success. Nothing is sent again.
        response.status_code = 200
        return _status(known)
    if acceptance.created or _may_be_unsent(known) or known.status == "FAILED":
        if known.status == "FAILED":
            _check_no_leftovers(known)
            # Its next run; numbered after the runs the projection knows, in case the worker
            # has forgotten the saga after its idempotency window.
            command = {**command, "knownRun": known.run, "knownSequence": known.last_sequence}
        try:
            await _publish(svc, record_name, command, traceparent)
        except Problem:
            if acceptance.created:
                await svc.db(store.forget_pending, request_id)
            raise
        if known.status == "FAILED":
            await svc.db(store.mark_retrying, request_id, now)
        status = "PENDING"
    else:
        status = known.status  # running: the seed's "already in progress", nothing sent again
    if wait > 0:
        finished = await _wait_until_finished(svc, request_id,
                                              min(wait, svc.settings.api_max_wait_s))
        if finished is not None:
            response.status_code = 200
            return _status(finished)
    return _accepted(request, request_id, status)


def _may_be_unsent(row: RequestRow) -> bool:
    """A PENDING row the worker has not reported on: the API that accepted it may have died
    before publishing. Sending it again is harmless (the worker runs a requestId once)."""
    return row.status == "PENDING" and row.last_sequence == 0


def _command(workflow: str, body: Any, request_id: str, who: Caller,
             tenant_id: str | None) -> tuple[str, dict[str, Any]]:
    fields = body.model_dump(mode="json", exclude={"requestId", "tenantId"}, exclude_none=True)
    command = {**fields, "requestId": request_id, "requestedBy": who.subject,
               "replyTo": body.replyTo, "requestedAt": _now_ms()}
    if workflow != "tenant":
        command["tenantId"] = tenant_id
    if workflow == "tenant":
        command.setdefault("tenantName", None)
        command["billingInfo"].setdefault("paymentMethod", None)
    record_name = {"tenant": "ProvisionTenantRequest", "service": "ProvisionServiceRequest",
                   "user": "ProvisionUserRequest", "resource": "ProvisionResourceRequest"}
    return record_name[workflow], command


async def _publish(svc: Services, record_name: str, command: dict[str, Any],
                   traceparent: str | None) -> None:
    try:
        await svc.publisher.publish(record_name, command, traceparent)
    except KafkaAccessDenied:
        # Logged with the principal and topic by the publisher; the caller learns only that
        # the service cannot take commands now.
        raise Problem(503, "the command could not be queued: the service may not write its "
                           "commands topic (an operator must fix its Kafka ACLs); nothing was "
                           "started", headers={"Retry-After": "30"}) from None
    except (TransientError, PublishError) as exc:
        raise Problem(503, f"the command could not be queued ({exc}); nothing was started, "
                           "send it again with the same requestId",
                      headers={"Retry-After": "2"}) from None


async def _wait_until_finished(svc: Services, request_id: str,
                               timeout_s: float) -> RequestRow | None:
    deadline = time.monotonic() + timeout_s
    woken = svc.listener.register(request_id)
    try:
        while True:
            woken.clear()  # before reading, so a notification during the read is not lost
            row = await svc.db(store.read_request, request_id)
            if row is not None and row.finished:
                return row
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(woken.wait(), remaining)
            except TimeoutError:
                return None
    finally:
        svc.listener.unregister(request_id, woken)


def _tenant_of_submission(workflow: str, body: Any, who: Caller,
                          x_tenant_id: str | None) -> str | None:
    _check_tenant_header(who, x_tenant_id, required=workflow != "tenant")
    if workflow == "tenant":
        return None
    if body.tenantId is not None and body.tenantId != x_tenant_id:
        raise Problem(400, "tenantId in the body differs from the X-Tenant-ID header")
    return x_tenant_id


async def _operator_target(svc: Services, who: Caller, x_tenant_id: str | None,
                           request_id: str) -> RequestRow:
    _require(who, OPERATE)
    _check_tenant_header(who, x_tenant_id, required=True)
    return await _visible_row(svc, who, request_id)


async def send_operator_action(svc: Services, row: RequestRow, who: Caller, action: str,
                               reason: str | None, step: str | None = None) -> None:
    """Check that `action` applies to `row` and publish the operator command (the console
    acts through here too). Raises Problem: 409 when it does not apply."""
    try:
        operator_actions.check(row, action, step)
    except operator_actions.NotApplicable as exc:
        if exc.uncompensated_steps:
            raise Problem(409, exc.detail, currentStatus=exc.current_status,
                          uncompensatedSteps=exc.uncompensated_steps) from None
        raise Problem(409, exc.detail, currentStatus=exc.current_status) from None
    command = operator_actions.operator_command(row, who.subject, action, reason, step)
    await _publish(svc, "ProvisioningOperatorCommand", command, None)


def _check_no_leftovers(row: RequestRow) -> None:
    """A FAILED request runs again only once its leftovers are cleared (the worker refuses
    it too): what its run left may clash with the next run or be duplicated by it."""
    if row.uncompensated_steps:
        steps = ", ".join(x.step for x in row.uncompensated_steps)
        raise Problem(409, f"{row.request_id} left {steps} uncompensated; an operator must "
                           "re-attempt (recompensate) or resolve them before it runs again",
                      uncompensatedSteps=[x.step for x in row.uncompensated_steps])


def _check_reply_topic(svc: Services, topic: str | None) -> None:
    """The worker writes replies with its own rights: never to a topic the rule forbids."""
    reason = svc.reply_topics.problem(topic) if topic is not None else None
    if reason is not None:
        raise Problem(422, f"the request is not valid: {reason}")


def _check_tenant_header(who: Caller, x_tenant_id: str | None, *, required: bool) -> None:
    if x_tenant_id is None:
        if required:
            raise Problem(400, "the X-Tenant-ID header is required")
        return
    if x_tenant_id != who.tenant_id:
        raise Problem(403, "X-Tenant-ID is not the tenant of the token")


def _require(who: Caller, permission: str) -> None:
    if not who.may(permission):
        raise Problem(403, f"the token lacks the {permission} permission")


def visible_to(row: RequestRow, who: Caller) -> bool:
    """A caller sees its tenant's requests and the tenant provisionings it submitted; an
    operator sees every request."""
    return who.may(OPERATE) or who.tenant_id in (row.tenant_id, row.submitted_tenant_id)


async def _visible_row(svc: Services, who: Caller, request_id: str) -> RequestRow:
    row = await svc.db(store.read_request, request_id)
    if row is None or not visible_to(row, who):
        raise Problem(404, f"no request {request_id} is visible to this caller")
    return row


def _status(row: RequestRow) -> RequestStatus:
    return RequestStatus(
        requestId=row.request_id, workflowType=row.workflow_type, tenantId=row.tenant_id,
        status=row.status, run=row.run, currentStep=row.current_step,
        completedSteps=list(row.completed_steps), compensatedSteps=list(row.compensated_steps),
        failedStep=row.failed_step, reason=row.reason, resourceId=row.resource_id,
        attempts=row.attempts, createdAt=row.created_at, updatedAt=row.updated_at,
        finishedAt=row.finished_at, uncompensatedSteps=[
            UncompensatedStep(step=x.step, reason=x.reason, since=x.since)
            for x in row.uncompensated_steps])


_ENVELOPE = {"requestId", "sequence", "run", "workflowType", "tenantId", "occurredAt", "step",
             "attempt"}


def _summary(letter: Any) -> DeadLetterSummary:
    return DeadLetterSummary(
        ref=f"{letter.partition}:{letter.offset}", key=letter.key,
        timestampMs=letter.timestamp_ms, reason=letter.reason, errorClass=letter.error_class,
        recordName=letter.record_name, command=letter.command)


def _details(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in _ENVELOPE and v is not None}


def _accepted(request: Request, request_id: str, status: str) -> Accepted:
    return Accepted(requestId=request_id, status=status,
                    statusUrl=_url(request, request_id, "status"),
                    eventsUrl=_url(request, request_id, "events"))


def _url(request: Request, request_id: str, what: str) -> str:
    return f"{PREFIX}/{request_id}/{what}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
