"""`provisioning`'s parser, and what a process loads before it works.

The parser is built on every start of the command, each worker process's too (the supervisor
starts its members as `python -m provisioning.cli worker`, and a restarted member is a failover):
building it must load nothing that only some commands use, and a worker loads neither the
migration tool nor, without HTTP routes, the HTTP client (the figures: README, What changed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from provisioning import cli

ROOT = Path(__file__).resolve().parents[2]
# Each used by some commands only: the database, the HTTP client, tokens, terminal tables,
# Kafka, the API server, the dev services' keys, the saga engine.
COMMAND_LIBRARIES = ("sqlalchemy", "psycopg", "httpx", "jwt", "rich", "pygments",
                     "confluent_kafka", "fastapi", "uvicorn", "cryptography", "sagas",
                     "consumer")


def loaded_after(code: str, libraries: tuple[str, ...]) -> list[str]:
    """Which of `libraries` a fresh interpreter has loaded after running `code`."""
    probe = (f"import json, sys\n{code}\n"
             f"print(json.dumps(sorted(m for m in {libraries!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_command_is_reached_without_loading_the_libraries_of_others() -> None:
    # `top`'s handler swapped for one that only answers: what `main` loaded on its way there
    # (parser, settings, dispatch) is what every command and every worker process pays.
    code = ("from provisioning import cli\n"
            "cli._top = lambda args, settings: 0\n"
            "assert cli.main(['top', '--once']) == 0")
    assert loaded_after(code, COMMAND_LIBRARIES) == []


def test_a_worker_without_http_routes_loads_no_migration_tool_or_http_client() -> None:
    code = ("from consumer.main import http_participants\n"
            "from consumer.routing import Routing\n"
            "from provisioning.database import create_engine\n"
            "import projection.projector\n"
            "assert http_participants(Routing.builtin()) == {}\n"
            "create_engine('postgresql+psycopg://u@127.0.0.1:1/db')")
    assert loaded_after(code, ("alembic", "httpx")) == []


def test_every_command_is_still_offered() -> None:
    offered = cli._parser().format_help()
    for command in ("worker", "projector", "api", "submit", "status", "events", "retry",
                    "cancel", "resume", "recompensate", "resolve", "token", "top", "dlq",
                    "registry", "bench", "topics"):
        assert command in offered, command


def test_top_is_parsed_as_before() -> None:
    args = cli._parser().parse_args(["top", "--once", "--window-min", "5"])
    assert (args.once, args.window_min, args.interval) == (True, 5, 2.0)
    assert args.handler is cli._top  # which imports the view only when it runs


def test_dlq_commands_are_parsed_as_before() -> None:
    args = cli._parser().parse_args(["dlq", "redrive", "3:41", "--set", "email=a@b.test"])
    assert (args.ref, args.set, args.operator) == ("3:41", ["email=a@b.test"], None)
    assert args.handler.__name__ == "redrive_letter"
