"""What a bench run shows: a console table and a PNG chart (throughput and latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def table(r: dict[str, Any]) -> Table:
    t = Table(title=f"provisioning bench, {r['date']}, {r['machine']['cores']} cores")
    for column in ("run", "per second", "p50 ms", "p95 ms", "p99 ms", "CPU s / 1000",
                   "commits / saga", "records / saga", "peak RSS MiB"):
        t.add_column(column, justify="right" if column != "run" else "left")

    def row(name: str, run: dict[str, Any], per_s: str = "sagas_per_s",
            cpu: str = "cpu_s_per_1000_sagas") -> None:
        latency = run.get("latency_ms", {})
        written = (f"{run['transactions_per_saga']:.3f}", f"{run['records_per_saga']:.1f}") \
            if "records_per_saga" in run else ("", "")
        t.add_row(name, f"{run[per_s]:,.0f}", *(f"{latency.get(q, float('nan')):,.0f}"
                                                for q in ("p50", "p95", "p99")),
                  f"{run.get(cpu, float('nan')):.2f}", *written,
                  f"{run.get('peak_rss_mb', float('nan')):.0f}")

    row("engine, no-op, full load", r["engine"])
    row("engine, no-op, 50% load", r["engine"]["at_half_load"])
    row("engine, no-op, 1 worker --processes 2", r["engine_2_processes"])
    row("engine, no-op, 2 separate workers", r["engine_2_workers"])
    row("engine, Postgres participants", r["engine_postgres"])
    row("DBOS, no-op steps", r["dbos"], "workflows_per_s", "cpu_s_per_1000_workflows")
    row("DBOS, registry statements", r["dbos_registry"], "workflows_per_s",
        "cpu_s_per_1000_workflows")
    t.add_row("raw Kafka (messages)", f"{r['raw']['messages_per_s']:,.0f}", *[""] * 7)
    rec, ratios = r["recovery"], r["ratios"]
    t.caption = (f"restore {rec['restore_states_per_s']:,.0f} states/s; failover "
                 f"{rec['failover_s']} s (new instance), {rec['failover_same_instance_s']} s "
                 f"(same instance); no-op: engine/DBOS {ratios['engine_vs_dbos']}x; registry "
                 f"statements: engine/DBOS {ratios['engine_postgres_vs_dbos_registry']}x "
                 f"(CPU per saga {ratios['engine_postgres_cpu_vs_dbos_registry']}x); "
                 f"--processes 2 / 1 process {ratios['two_processes_vs_one']}x; engine "
                 f"messages/raw {ratios['engine_vs_raw_messages']:.0%}")
    return t


def print_table(r: dict[str, Any], console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped into a file or a log: do not wrap the rows
            console = Console(width=160)
    console.print(table(r))


def chart(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [  # (name, rate, colour): the engine in blues, DBOS in greys
        ("engine\nno-op", r["engine"]["sagas_per_s"], "#2b6cb0"),
        ("engine\nno-op\n2 processes", r["engine_2_processes"]["sagas_per_s"], "#3182ce"),
        ("engine\nno-op\n2 workers", r["engine_2_workers"]["sagas_per_s"], "#4299e1"),
        ("DBOS\nno-op", r["dbos"]["workflows_per_s"], "#a0aec0"),
        ("engine\nPostgres", r["engine_postgres"]["sagas_per_s"], "#63b3ed"),
        ("DBOS\nregistry", r["dbos_registry"]["workflows_per_s"], "#cbd5e0"),
    ]
    names, rates, colours = zip(*bars, strict=True)
    # Six bars on the left, three groups on the right: the left half wider, so that the
    # bars' names do not run into each other.
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4),
                                         gridspec_kw={"width_ratios": [1.4, 1]})
    left.bar(names, rates, color=colours)
    left.set_yscale("log")  # no-op and registry rates differ by orders of magnitude
    if max(rates, default=0) > 0:
        left.set_ylim(top=max(rates) * 1.6)  # room for the highest bar's figure
    left.set_ylabel("five-step workflows per second (log scale)")
    left.set_title("Throughput")
    for i, value in enumerate(rates):
        left.annotate(f"{value:,.0f}", (i, value), ha="center", va="bottom")
    runs = {"engine 50% load": r["engine"]["at_half_load"]["latency_ms"],
            "engine full load": r["engine"]["latency_ms"],
            "DBOS no-op": r["dbos"]["latency_ms"]}
    width = 0.25
    for j, q in enumerate(("p50", "p95", "p99")):
        right.bar([i + j * width for i in range(len(runs))], [v[q] for v in runs.values()],
                  width, label=q)
    right.set_xticks([i + width for i in range(len(runs))], list(runs))
    right.set_yscale("log")
    right.set_ylabel("ms, command -> outcome (log scale)")
    right.set_title("Latency")
    right.legend()
    figure.suptitle(f"provisioning bench, {r['date'][:10]}, {r['machine']['cores']} cores")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
