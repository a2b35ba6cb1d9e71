"""The `provisioning` command line.

Each sub-command is a thin shell over a module that does the work; errors of this project end
the command with one clear line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from provisioning.errors import DevServiceError, ProvisioningError, SchemaError
from provisioning.settings import Settings, get_settings

METRICS_HELP = "serve /metrics, /healthz, /readyz here (default: PROVISIONING_METRICS_PORT)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    settings = get_settings()
    if getattr(args, "metrics_port", None) is not None:
        settings = settings.model_copy(update={"metrics_port": args.metrics_port})
    try:
        return handler(args, settings)
    except (ProvisioningError, SchemaError, DevServiceError) as exc:
        print(f"provisioning: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provisioning",
        description="Provisioning Service: every provisioning workflow of the platform as sagas.",
    )
    commands = parser.add_subparsers(metavar="COMMAND")

    dev = commands.add_parser("dev", help="local Kafka and PostgreSQL for development and tests")
    dev_commands = dev.add_subparsers(metavar="ACTION", required=True)
    up = dev_commands.add_parser(
        "up", help="start the local broker and database (idempotent) and wait for them")
    up.add_argument("--brokers", type=int, default=1, choices=range(1, 10), metavar="N",
                    help="Kafka nodes (each broker and controller); 3 gives every topic three "
                    "replicas and min.insync.replicas=2 (default: 1)")
    up.add_argument("--secure", action="store_true",
                    help="TLS with a local CA, SASL/SCRAM-SHA-512, a principal per role and "
                    "their ACLs (see `provisioning dev env --role`)")
    up.set_defaults(handler=_dev_up)
    status = dev_commands.add_parser("status", help="tell what runs where")
    status.add_argument("--json", action="store_true",
                        help="every Kafka node with its id, roles, ports, pid and data folder")
    status.set_defaults(handler=_dev_status)
    env = dev_commands.add_parser("env", help="print shell exports for the local services")
    env.add_argument("--role", help="on a secure cluster, the principal whose settings to "
                     "print: operator (default), publisher, worker, projector, api, participant")
    env.set_defaults(handler=_dev_env)
    for name, handler, text in [
        ("down", _dev_down, "stop both"),
        ("tools", _dev_tools, "build the tools the tests need (helm, with go install)"),
    ]:
        dev_commands.add_parser(name, help=text).set_defaults(handler=handler)

    topics = commands.add_parser("topics", help="the service's Kafka topics")
    topic_commands = topics.add_subparsers(metavar="ACTION", required=True)
    create = topic_commands.add_parser("create", help="create the topics idempotently")
    create.add_argument("--partitions", type=int, help="partition count (default from settings)")
    create.add_argument("--prefix", help="topic namespace prefix (default from settings)")
    create.set_defaults(handler=_topics_create)

    acls = commands.add_parser("acls", help="the Kafka ACLs of every principal of the service")
    acl_commands = acls.add_subparsers(metavar="ACTION", required=True)
    apply = acl_commands.add_parser(
        "apply", help="print the ACLs each principal needs and create those missing "
        "(idempotent; run as a principal with Alter on the Cluster)")
    apply.add_argument("--prefix", help="topic namespace prefix (default from settings)")
    apply.add_argument("--participant", action="append", default=None, metavar="NAME",
                       help="a Kafka participant (repeatable; default: those the routing "
                       "file names)")
    apply.add_argument("--principal", action="append", default=[], metavar="ROLE=PRINCIPAL",
                       help="e.g. worker=User:svc-prov-worker or participant:billing=User:b "
                       "(default: User:provisioning-<role>, User:participant-<name>)")
    apply.add_argument("--group", action="append", default=[], metavar="ROLE=GROUP",
                       help="consumer group of worker, projector or participant:<name> "
                       "(default: the processes' defaults)")
    apply.add_argument("--reply-topic-prefix", metavar="PREFIX",
                       help="let the worker write replies to topics starting with PREFIX")
    apply.add_argument("--publisher-reads-outcomes", action="store_true",
                       help="let publishers read the events and state topics "
                       "(ProvisioningClient.await_outcome, submit_and_wait)")
    apply.add_argument("--dry-run", action="store_true", help="print, create nothing")
    apply.set_defaults(handler=_acls_apply)

    demo = commands.add_parser("demo", help="run a mixed batch of provisioning requests")
    demo.add_argument("--serve", action="store_true",
                      help="keep the worker, projector and API (the console) running until Ctrl-C")
    demo.set_defaults(handler=_demo)

    worker = commands.add_parser("worker", help="run sagas: consume commands, produce events")
    worker.add_argument("--group", default="provisioning-worker", help="consumer group id")
    worker.add_argument("--instance-id", help="stable id of this process (default: host name)")
    worker.add_argument("--commit-interval-ms", type=int, default=100,
                        help="the longest a transaction stays open")
    worker.add_argument("--min-commit-interval-ms", type=int, default=5,
                        help="the shortest, when the worker has caught up with its input")
    worker.add_argument("--max-in-flight", type=int, default=10_000)
    worker.add_argument("--step-concurrency", type=int, default=32)
    worker.add_argument("--idempotency-window-s", type=int,
                        help="default: PROVISIONING_IDEMPOTENCY_WINDOW_S (7 days)")
    worker.add_argument("--static-membership", action="store_true",
                        help="keep partitions across a restart under the same --instance-id")
    worker.add_argument("--stall-after-s", type=float, default=60.0,
                        help="a partition with unread records and no progress this long, not "
                        "held back by flow control, turns readiness false")
    worker.add_argument("--metrics-port", type=int, help=METRICS_HELP)
    worker.add_argument(
        "--processes", type=_positive_int,
        help="consumer-group members to run, each its own process under one supervisor that "
        "restarts them and serves --metrics-port for all; their instance ids are "
        "<instance-id>-<n> (default: the cores this process may run on, which a container's "
        "CPU limit does not narrow: say how many under Kubernetes); 1: a single process")
    worker.add_argument("--status-file", type=Path,
                        help="run as a member of --processes: write this process's readiness "
                        "and liveness here every second for the supervisor, which serves the "
                        "metrics port (this process serves none)")
    worker.set_defaults(handler=_worker, member_parser=worker)

    bench = commands.add_parser(
        "bench", help="throughput, latency and recovery, side by side with raw Kafka and DBOS")
    bench.add_argument("--quick", action="store_true", help="small sizes: under 2 minutes")
    bench.add_argument("--sagas", type=int, help="sagas per engine run")
    bench.add_argument("--states", type=int, help="saga states to restore")
    bench.add_argument("--dbos", type=int, help="DBOS workflows")
    bench.add_argument("--json", type=Path, dest="json_path", help="write every figure here")
    bench.add_argument("--chart", type=Path, help="write the PNG chart here")
    bench.set_defaults(handler=_bench)

    db = commands.add_parser("db", help="the service's database")
    db_commands = db.add_subparsers(metavar="ACTION", required=True)
    db_commands.add_parser("upgrade", help="apply migrations").set_defaults(handler=_db_upgrade)

    projector = commands.add_parser("projector", help="project the events topic into Postgres")
    projector.add_argument("--group", default="provisioning-projector", help="consumer group id")
    projector.add_argument("--batch-size", type=int, default=500)
    projector.add_argument("--metrics-port", type=int, help=METRICS_HELP)
    projector.set_defaults(handler=_projector)

    api = commands.add_parser("api", help="serve the REST API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, help="default: PROVISIONING_DEV_API_PORT (18080)")
    api.add_argument("--metrics-port", type=int, help=METRICS_HELP)
    api.set_defaults(handler=_api)

    # Light modules: what a command needs is imported when it runs (the parser is built on
    # every start, each worker process's too).
    from provisioning import dlq_cli, requests_cli

    requests_cli.add_commands(commands)
    top = commands.add_parser("top", help="live view of provisioning (from the projection)")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    top.add_argument("--window-min", type=int, default=15, help="minutes the rates cover")
    top.set_defaults(handler=_top)
    dlq_cli.add_commands(commands)

    registry = commands.add_parser("registry", help="the built-in participants' registry")
    registry_commands = registry.add_subparsers(metavar="ACTION", required=True)
    add_entity = registry_commands.add_parser("add-entity", help="register an eligible entity")
    add_entity.add_argument("--id", required=True, dest="entity_id")
    add_entity.add_argument("--name", required=True)
    add_entity.set_defaults(handler=_registry_add_entity)
    return parser


def _top(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning.top import run_top

    return run_top(args, settings)


def _dev_services(settings: Settings, shape=None):  # noqa: ANN001, ANN202 - lazy imports
    from provisioning.devservices import LocalServices

    return LocalServices.from_settings(settings, shape)


def _dev_up(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning.devservices import ClusterShape

    shape = ClusterShape(brokers=args.brokers, secure=args.secure)
    for line in _dev_services(settings, shape).up():
        print(line)
    return 0


def _dev_down(args: argparse.Namespace, settings: Settings) -> int:
    for line in _dev_services(settings).down():
        print(line)
    return 0


def _dev_status(args: argparse.Namespace, settings: Settings) -> int:
    services = _dev_services(settings)
    if args.json:
        print(json.dumps(services.status_json(), indent=2))
        return 0
    for line in services.status():
        print(line)
    return 0


def _dev_env(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning.devservices.kafka_principals import DEV_ROLES

    services = _dev_services(settings)
    for key, value in services.env(args.role).items():
        print(f"export {key}={shlex.quote(value)}")
    if services.kafka.shape.secure:
        others = ", ".join(r.split(":")[0] for r in DEV_ROLES if r != (args.role or "operator"))
        print(f"# as {args.role or 'operator'}; the other roles: provisioning dev env --role "
              f"ROLE ({others})")
    return 0


def _dev_tools(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning.devservices.tools import ensure_helm

    print(f"helm      {ensure_helm()}")
    return 0


def _topics_create(args: argparse.Namespace, settings: Settings) -> int:
    from confluent_kafka.admin import AdminClient

    from consumer.routing import load_routing
    from provisioning.kafka_access import client_config
    from provisioning.topics import TopicLayout, create_topics

    layout = TopicLayout(args.prefix if args.prefix is not None else settings.topic_prefix)
    # step-requests.<participant> for every participant the routing file sends steps to
    participants = sorted(load_routing(settings.routing_file).kafka_participants())
    specs = layout.specs(args.partitions or settings.topic_partitions, participants,
                         max_command_bytes=settings.max_command_bytes)
    report = create_topics(
        AdminClient(client_config(settings)), specs, settings.topic_replication_factor,
        min_insync_replicas=settings.topic_min_insync_replicas, settings=settings,
    )
    for name in report.created:
        print(f"created  {name}")
    for name in report.existing:
        print(f"exists   {name}")
    for name in report.reconfigured:
        print(f"set      {name} (configs brought to the spec)")
    return 0


def _acls_apply(args: argparse.Namespace, settings: Settings) -> int:
    from confluent_kafka.admin import AdminClient

    from consumer.routing import load_routing
    from provisioning.acls import AclPlan, apply_grants, service_grants
    from provisioning.kafka_access import client_config
    from provisioning.topics import TopicLayout

    participants = (args.participant if args.participant is not None
                    else sorted(load_routing(settings.routing_file).kafka_participants()))
    plan = AclPlan(
        TopicLayout(args.prefix if args.prefix is not None else settings.topic_prefix),
        participants=tuple(participants), principals=_pairs(args.principal, "--principal"),
        groups=_pairs(args.group, "--group"), reply_topic_prefix=args.reply_topic_prefix,
        publisher_reads_outcomes=args.publisher_reads_outcomes)
    report = apply_grants(AdminClient(client_config(settings)), service_grants(plan),
                          dry_run=args.dry_run)
    marks = [("would add" if args.dry_run else "added", report.added),
             ("exists", report.present)]
    for mark, rows in marks:
        for grant, operation in rows:
            print(f"{mark:<9}  {grant.principal:<36} {operation:<15} {grant.resource} "
                  f"{grant.name}{' (prefixed)' if grant.pattern == 'prefixed' else ''}  "
                  f"# {grant.why}")
    return 0


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    from provisioning.errors import ConfigurationError

    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise ConfigurationError(f"{flag} takes ROLE=VALUE, not {value!r}")
        pairs[key] = rest
    return pairs


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning.demo import run_demo

    return run_demo(settings, serve=args.serve)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.supervisor import Supervisor, default_processes
    from consumer.worker import WorkerOptions

    defaults = WorkerOptions()
    instance_id = args.instance_id or defaults.instance_id
    processes = args.processes or default_processes()
    if processes > 1:
        from provisioning.logs import configure_logging

        configure_logging()
        return Supervisor(
            processes, lambda member: _member_command(args, member.instance_id,
                                                      member.status_file),
            instance_id=instance_id, metrics_port=settings.metrics_port).run()
    from consumer.main import run_worker

    if args.status_file is not None:
        # A member: its supervisor serves the port (a PROVISIONING_METRICS_PORT from a .env
        # file would otherwise be bound twice).
        settings = settings.model_copy(update={"metrics_port": None})
    options = WorkerOptions(
        group_id=args.group,
        instance_id=instance_id,
        commit_interval_ms=args.commit_interval_ms,
        min_commit_interval_ms=args.min_commit_interval_ms,
        max_in_flight=args.max_in_flight,
        step_concurrency=args.step_concurrency,
        idempotency_window_ms=(args.idempotency_window_s
                               or settings.idempotency_window_s) * 1000,
        static_membership=args.static_membership,
        stall_after_s=args.stall_after_s,
    )
    return run_worker(settings, options, status_file=args.status_file)


# Options of `worker` the supervisor sets for each member itself; every other one is passed on.
_SUPERVISOR_OPTIONS = {"processes", "instance_id", "metrics_port", "status_file", "help"}


def _member_command(args: argparse.Namespace, instance_id: str, status_file: Path) -> list[str]:
    """`provisioning worker` for one member: the supervisor's own options, re-rendered from the
    parsed arguments (so an option added to `worker` reaches the members without a change
    here), with the member's instance id and status file, as a single process."""
    passed: list[str] = []
    for action in args.member_parser._actions:  # argparse has no public accessor for these
        value = getattr(args, action.dest, None)
        if action.dest in _SUPERVISOR_OPTIONS or value is None or value is False:
            continue
        option = action.option_strings[-1]
        passed += [option] if value is True else [option, str(value)]
    return [sys.executable, "-m", "provisioning.cli", "worker", *passed,
            "--instance-id", instance_id, "--status-file", str(status_file), "--processes", "1"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _projector(args: argparse.Namespace, settings: Settings) -> int:
    from projection.projector import ProjectorOptions, run_projector

    return run_projector(settings, ProjectorOptions(group=args.group,
                                                    batch_size=args.batch_size))


def _api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app
    from provisioning.logs import configure_logging

    configure_logging()
    # The console's live streams end when the server stops (app.state.closing); the timeout
    # bounds a shutdown that anything else would hold up.
    config = uvicorn.Config(create_app(settings), host=args.host,
                            port=args.port or settings.dev_api_port, log_config=None,
                            access_log=False, timeout_graceful_shutdown=10)
    _graceful_server_class()(config).run()
    return 0


def _graceful_server_class():
    import contextlib
    import signal

    import uvicorn

    class GracefulServer(uvicorn.Server):
        """Finishes in-flight requests on SIGTERM/SIGINT and exits 0, as the worker does
        (uvicorn's own handler re-raises the signal, so the exit code would say "killed")."""

        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[override]
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, self.handle_exit)
            yield

        def handle_exit(self, sig, frame):  # type: ignore[no-untyped-def]
            closing = getattr(getattr(self.config.app, "state", None), "closing", None)
            if closing is not None:
                closing.set()
            super().handle_exit(sig, frame)

    return GracefulServer


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from bench.report import print_table
    from bench.run import Sizes, run_bench, write_outputs

    console = Console(stderr=True)
    sizes = Sizes.choose(args.quick, args.sagas, args.states, args.dbos)
    results = run_bench(settings, sizes, say=lambda line: console.print(f"[dim]{line}[/]"))
    write_outputs(results, args.json_path, args.chart)
    print_table(results)
    return 0


def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning.database import upgrade

    upgrade(settings)
    print("database is at the latest revision")
    return 0


def _registry_add_entity(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.participants.builtin.registry import add_entity
    from provisioning.database import create_engine

    add_entity(create_engine(settings), args.entity_id, args.name)
    print(f"entity {args.entity_id} registered as eligible")
    return 0


def run() -> NoReturn:
    """The `provisioning` executable: `main()`, then an exit that skips the C library's exit
    handlers once logs and output are flushed. A Kafka client still alive then (an AdminClient
    cannot be closed; a producer whose call hung is abandoned) keeps broker threads doing TLS
    while those handlers free OpenSSL's tables under them: seen as SIGSEGV or a corrupted heap
    after a refused login, in about 1 exit of 10. Nothing of the service relies on the
    interpreter's teardown."""
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a reader that went away (`| head`)
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
