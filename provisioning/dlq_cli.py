"""`provisioning dlq list|show|redrive`: dead-lettered commands, for operators.

The Kafka side (`provisioning.dlq_admin`) and rich are imported when a command runs: every
start of `provisioning` builds the parser, each worker process's too.
"""

from __future__ import annotations

import argparse
import getpass
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from provisioning.requests_cli import assignments
from provisioning.settings import Settings

if TYPE_CHECKING:
    from provisioning.dlq_admin import DeadLetter


def add_commands(commands: argparse._SubParsersAction) -> None:
    dlq = commands.add_parser("dlq", help="dead-lettered commands: list, show, redrive")
    actions = dlq.add_subparsers(metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the dead letters with their reasons")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=list_letters)
    show = actions.add_parser("show", help="one dead letter, decoded")
    show.add_argument("ref", metavar="PARTITION:OFFSET")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=show_letter)
    again = actions.add_parser("redrive", help="fix a dead letter and send it again")
    again.add_argument("ref", metavar="PARTITION:OFFSET")
    again.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="change a field before sending (dotted for nested fields)")
    again.add_argument("--operator", default=None, help="who redrives (default: OS user)")
    again.set_defaults(handler=redrive_letter)


def list_letters(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.table import Table

    from provisioning.dlq_admin import read_dead_letters

    letters = read_dead_letters(settings, limit=args.limit)
    if args.json:
        print(json.dumps([_as_json(x) for x in letters], indent=2, default=str))
        return 0
    table = Table(title=f"{len(letters)} dead-lettered commands")
    for column in ("ref", "time (UTC)", "key", "error", "reason"):
        table.add_column(column, overflow="fold")
    for x in letters:
        table.add_row(x.ref, _when(x.timestamp_ms), x.key or "-", x.error_class or "-",
                      (x.reason or "-")[:160])
    Console(width=max(120, Console().width)).print(table)
    return 0


def show_letter(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from provisioning.dlq_admin import find

    letter = find(settings, args.ref)
    if args.json:
        print(json.dumps(_as_json(letter), indent=2, default=str))
        return 0
    console = Console()
    for name, value in (("ref", letter.ref), ("time (UTC)", _when(letter.timestamp_ms)),
                        ("key", letter.key), ("error", letter.error_class),
                        ("reason", letter.reason), ("from", letter.origin),
                        ("record", letter.record_name or "not decodable")):
        console.print(f"[bold]{name:<11}[/] {value if value is not None else '-'}")
    if letter.command is not None:
        console.print_json(json.dumps(letter.command, default=str))
    else:
        console.print(f"[bold]bytes[/]       {letter.value[:64].hex(' ')}"
                      f"{' …' if len(letter.value) > 64 else ''} ({len(letter.value)} bytes)")
    return 0


def redrive_letter(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from provisioning.dlq_admin import find, redrive

    changes = assignments(args.set)
    letter = find(settings, args.ref)
    request_id = redrive(settings, letter, changes=changes,
                         operator=args.operator or getpass.getuser())
    Console().print(f"redriven {letter.ref} as request [bold]{request_id}[/]; follow it with: "
                    f"provisioning events {request_id}")
    return 0


def _as_json(letter: DeadLetter) -> dict[str, Any]:
    return {"ref": letter.ref, "key": letter.key, "timestampMs": letter.timestamp_ms,
            "reason": letter.reason, "errorClass": letter.error_class, "origin": letter.origin,
            "recordName": letter.record_name, "command": letter.command,
            "bytes": len(letter.value)}


def _when(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime(
        "%Y-%m-%d %H:%M:%S")
