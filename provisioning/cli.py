"""The `provisioning` command line.

Each sub-command is a thin shell over a module that does the work; errors of this project end
the command with one clear line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence

from provisioning.errors import ProvisioningError
from provisioning.settings import Settings, get_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    from provisioning.devservices import DevServiceError

    try:
        return handler(args, get_settings())
    except (ProvisioningError, DevServiceError) as exc:
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
    for name, handler, text in [
        ("up", _dev_up, "start the local broker and database (idempotent) and wait for them"),
        ("down", _dev_down, "stop both"),
        ("status", _dev_status, "tell what runs where"),
        ("env", _dev_env, "print shell exports for the local services"),
    ]:
        dev_commands.add_parser(name, help=text).set_defaults(handler=handler)

    topics = commands.add_parser("topics", help="the service's Kafka topics")
    topic_commands = topics.add_subparsers(metavar="ACTION", required=True)
    create = topic_commands.add_parser("create", help="create the topics idempotently")
    create.add_argument("--partitions", type=int, help="partition count (default from settings)")
    create.add_argument("--prefix", help="topic namespace prefix (default from settings)")
    create.set_defaults(handler=_topics_create)

    demo = commands.add_parser("demo", help="publish a sample command and read it back")
    demo.set_defaults(handler=_demo)
    return parser


def _dev_services(settings: Settings):
    from provisioning.devservices import LocalServices

    return LocalServices.from_settings(settings)


def _dev_up(args: argparse.Namespace, settings: Settings) -> int:
    for line in _dev_services(settings).up():
        print(line)
    return 0


def _dev_down(args: argparse.Namespace, settings: Settings) -> int:
    for line in _dev_services(settings).down():
        print(line)
    return 0


def _dev_status(args: argparse.Namespace, settings: Settings) -> int:
    for line in _dev_services(settings).status():
        print(line)
    return 0


def _dev_env(args: argparse.Namespace, settings: Settings) -> int:
    for key, value in _dev_services(settings).env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _topics_create(args: argparse.Namespace, settings: Settings) -> int:
    from confluent_kafka.admin import AdminClient

    from provisioning.topics import TopicLayout, create_topics

    layout = TopicLayout(args.prefix if args.prefix is not None else settings.topic_prefix)
    specs = layout.specs(args.partitions or settings.topic_partitions)
    report = create_topics(
        AdminClient(settings.kafka_config()), specs, settings.topic_replication_factor
    )
    for name in report.created:
        print(f"created  {name}")
    for name in report.existing:
        print(f"exists   {name}")
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning.demo import run_demo

    return run_demo(settings)


if __name__ == "__main__":
    raise SystemExit(main())
