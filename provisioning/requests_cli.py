"""`provisioning submit|status|events|retry|token` and the operators' actions (`cancel`, `resume`,
`recompensate`, `resolve`): requests through the REST API, for people.

Human output by default (rich tables, the audit trail as a timeline); `--json` prints the API's
answer unchanged, for scripts. The HTTP client and rich are imported when a command runs, not
here: every start of `provisioning` builds the parser, each worker process's too.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioning.errors import ConfigurationError
from provisioning.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from provisioning.api_client import ApiClient

WORKFLOWS = ("tenant", "service", "user", "resource")
EXAMPLE_FIELDS = {
    "tenant": "entityId=E subscriptionPlan=BUSINESS billingInfo.accountName=Acme "
              "billingInfo.billingEmail=billing@acme.test billingInfo.currency=EUR",
    "service": "serviceName=CartService slaTier=GOLD",
    "user": "email=ada@acme.test roleName=member",
    "resource": "serviceName=CoreService resourceType=DATABASE resourceSpec.sizeGb=5",
}
STATUS_STYLE = {"COMPLETED": "green", "FAILED": "red", "REJECTED": "red",
                "COMPENSATING": "yellow", "IN_PROGRESS": "cyan", "PENDING": "cyan"}


def add_commands(commands: argparse._SubParsersAction) -> None:
    submit = commands.add_parser(
        "submit", help="submit a provisioning request through the API",
        description="Fields are the API body's, as name=value; nested ones dotted. Examples:\n"
        + "\n".join(f"  provisioning submit {w} {f}" for w, f in EXAMPLE_FIELDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    submit.add_argument("workflow", choices=WORKFLOWS)
    submit.add_argument("fields", nargs="*", metavar="NAME=VALUE")
    submit.add_argument("--body-file", type=Path, help="JSON body instead of NAME=VALUE fields")
    submit.add_argument("--request-id", help="idempotency key (default: generated)")
    submit.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                        help="wait up to this long for the outcome")
    _connection_options(submit)
    submit.set_defaults(handler=_submit)

    for name, handler, text in [
        ("status", _status, "where a request stands"),
        ("events", _events, "a request's audit trail as a timeline"),
        ("retry", _retry, "resend a FAILED request (its next run)"),
    ]:
        command = commands.add_parser(name, help=text)
        command.add_argument("request_id")
        _connection_options(command)
        command.set_defaults(handler=handler)

    for name, text in [
        ("cancel", "operators: cancel an in-flight request (what completed is compensated)"),
        ("resume", "operators: a fresh attempt of the step a stuck request waits on"),
    ]:
        command = commands.add_parser(name, help=text)
        command.add_argument("request_id")
        command.add_argument("--reason", help="why (recorded in the request's audit trail)")
        _connection_options(command)
        command.set_defaults(handler=_operate, action=name, step=None)

    for name, text, reason_help in [
        ("recompensate", "operators: try again to undo an uncompensated step of a FAILED "
         "request", "why (recorded in the request's audit trail)"),
        ("resolve", "operators: record that an uncompensated step was cleaned up by hand",
         "what was done (required; recorded in the request's audit trail)"),
    ]:
        command = commands.add_parser(name, help=text)
        command.add_argument("request_id")
        command.add_argument("--step", required=True,
                             help="the uncompensated step (see `provisioning status <id>`)")
        command.add_argument("--reason", required=name == "resolve", help=reason_help)
        _connection_options(command)
        command.set_defaults(handler=_operate, action=name)

    token = commands.add_parser("token", help="print a development token (local signing key)")
    token.add_argument("--operator", action="store_true",
                       help="an operator's token (read, retry, operate; subject ops-dev, tenant "
                       "platform-ops unless given): sign in to the console with it")
    token.add_argument("--subject", help="the caller's identity (sub); required without "
                       "--operator")
    token.add_argument("--tenant", help="the caller's tenant (tenant_id); required without "
                       "--operator")
    token.add_argument("--permission", action="append", dest="permissions",
                       help="repeatable, e.g. provisioning:onboard; default: submit, read, "
                       "retry and onboard (a local developer acting as the platform)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.set_defaults(handler=_token)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", help="default: PROVISIONING_API_URL")
    parser.add_argument("--token", help="default: PROVISIONING_API_TOKEN")
    parser.add_argument("--tenant", help="X-Tenant-ID (default: the token's tenant)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")


def _client(args: argparse.Namespace, settings: Settings) -> ApiClient:
    from provisioning.api_client import ApiClient

    token = args.token or (settings.api_token.get_secret_value() if settings.api_token else None)
    return ApiClient(args.api_url or settings.api_url, token, args.tenant)


def _submit(args: argparse.Namespace, settings: Settings) -> int:
    body = _body(args)
    if args.request_id:
        body["requestId"] = args.request_id
    answer = _client(args, settings).submit(args.workflow, body, args.wait)
    if args.json:
        _print_json(answer)
    elif "workflowType" in answer:
        _print_status(answer)
    else:
        _console().print(f"accepted [bold]{answer['requestId']}[/] ({answer['status']}); "
                        f"follow it with: provisioning status {answer['requestId']}")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    answer = _client(args, settings).status(args.request_id)
    _print_json(answer) if args.json else _print_status(answer)
    return 0


def _events(args: argparse.Namespace, settings: Settings) -> int:
    answer = _client(args, settings).events(args.request_id)
    _print_json(answer) if args.json else _print_timeline(answer)
    return 0


def _retry(args: argparse.Namespace, settings: Settings) -> int:
    answer = _client(args, settings).retry(args.request_id)
    if args.json:
        _print_json(answer)
    else:
        _console().print(f"retrying [bold]{answer['requestId']}[/] ({answer['status']})")
    return 0


def _operate(args: argparse.Namespace, settings: Settings) -> int:
    answer = _client(args, settings).operate(args.request_id, args.action, args.reason,
                                             args.step)
    if args.json:
        _print_json(answer)
    else:
        step = f" ({args.step})" if args.step else ""
        _console().print(f"{args.action}{step} of [bold]{answer['requestId']}[/] sent "
                        f"(was {answer['status']}); follow it with: "
                        f"provisioning events {answer['requestId']}")
    return 0


OPERATOR_SUBJECT, OPERATOR_TENANT = "ops-dev", "platform-ops"


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from api.auth import ALL_PERMISSIONS, OPERATE, READ, RETRY, issue_token
    from provisioning.devservices.signing_key import KEY_ID, DevSigningKey

    if args.operator:
        subject = args.subject or OPERATOR_SUBJECT
        tenant = args.tenant or OPERATOR_TENANT
        default_permissions: tuple[str, ...] = (READ, RETRY, OPERATE)
    elif args.subject and args.tenant:
        subject, tenant, default_permissions = args.subject, args.tenant, ALL_PERMISSIONS
    else:
        raise ConfigurationError("token needs --subject and --tenant (or --operator)")
    key = DevSigningKey(Path(settings.dev_dir).resolve() / "auth").ensure()
    print(issue_token(key.private_key_pem(), key_id=KEY_ID, issuer=settings.auth_issuer,
                      audience=settings.auth_audience, subject=subject, tenant_id=tenant,
                      permissions=tuple(args.permissions or default_permissions),
                      ttl_s=args.ttl, now=int(time.time())))
    return 0


def _body(args: argparse.Namespace) -> dict[str, Any]:
    from consumer.commands import unflatten

    if args.body_file:
        return json.loads(args.body_file.read_text())
    return unflatten(assignments(args.fields))


def assignments(items: list[str]) -> dict[str, str]:
    """NAME=VALUE arguments as a mapping; a malformed one is a clear error."""
    fields = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigurationError(f"{item!r} is not NAME=VALUE")
        fields[name] = value
    return fields


def _console(**options: Any) -> Console:
    from rich.console import Console

    return Console(**options)


def _print_json(answer: dict[str, Any]) -> None:
    print(json.dumps(answer, indent=2))


def _print_status(s: dict[str, Any]) -> None:
    style = STATUS_STYLE.get(s["status"], "")
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("request", s["requestId"]), ("workflow", s["workflowType"]),
        ("tenant", s["tenantId"] or "-"), ("status", f"[{style}]{s['status']}[/]"),
        ("run", str(s["run"])), ("current step", s["currentStep"] or "-"),
        ("completed", ", ".join(s["completedSteps"]) or "-"),
        ("compensated", ", ".join(s["compensatedSteps"]) or "-"),
        ("failed step", s["failedStep"] or "-"), ("reason", s["reason"] or "-"),
        ("resource", s["resourceId"] or "-"), ("step attempts", str(s["attempts"])),
        ("created", s["createdAt"]), ("updated", s["updatedAt"]),
        ("finished", s["finishedAt"] or "-"),
    ]
    rows += [(f"[red]uncompensated[/] {x['step']}", f"{x['reason']} (since {x['since']})")
             for x in s.get("uncompensatedSteps", [])]
    for name, value in rows:
        table.add_row(name, value)
    _console().print(table)


EVENT_STYLE = {"Succeeded": "green", "FailedEvent": "red", "Rejected": "red",
               "OperatorAction": "bold",
               "StepFailed": "yellow", "CompensationStarted": "yellow",
               "StepCompensated": "yellow", "CompensationFailed": "red"}
HIDDEN_DETAILS = ("payloadHash", "deadlineAt", "stepDeadline", "nextRetryAt", "workflowVersion")


def _print_timeline(trail: dict[str, Any]) -> None:
    """One line per event, never cut: time, sequence, run, event, step, what it said."""
    console = _console(highlight=False, soft_wrap=True)
    console.print(f"[bold]request {trail['requestId']}[/]")
    for e in trail["events"]:
        when = datetime.fromisoformat(e["occurredAt"]).strftime("%H:%M:%S.%f")[:-3]
        name = e["type"].removeprefix("Provisioning")
        step = e["step"] or ""
        if e["attempt"]:
            step += f" #{e['attempt']}"
        style = EVENT_STYLE.get(name, "")
        event = f"[{style}]{name:<20}[/]" if style else f"{name:<20}"
        console.print(f"{when}  {e['sequence']:>3}  run {e['run']}  {event} {step:<28} "
                      f"{_details_text(e['details'])}".rstrip())


def _details_text(details: dict[str, Any]) -> str:
    parts: dict[str, str] = {}
    for key, value in details.items():
        if key in HIDDEN_DETAILS or value in ({}, "", None):
            continue
        if isinstance(value, dict):
            parts.update((k, str(v)) for k, v in value.items())
        else:
            parts[key] = str(value)
    return ", ".join(f"{k}={v}" for k, v in parts.items())
