"""Text tables, JSON and the chart for ``parley cost``. Formatting only; numbers come from
``parley.cost.model`` and ``parley.cost.course_design``."""

from __future__ import annotations

import dataclasses
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from parley.cost import course_design as design
from parley.cost.measured import SHAPES, WORKLOADS, BenchFile, Workload
from parley.cost.model import (
    ModelInputs,
    ShapeCost,
    Verdict,
    cheapest_highly_available,
    estimate,
)
from parley.cost.prices import SOURCES, TABLES, Prices

__all__ = [
    "SAMPLE_BANNER",
    "ChartUnavailable",
    "Report",
    "render_json",
    "render_text",
    "write_chart",
]

SAMPLE_BANNER: Final = "SAMPLE INPUT, not measured"
_SAMPLE_LINE_2: Final = "illustrative figures from the built-in sample bench, not a benchmark run"
_WIDTH: Final = 100
_SAMPLE_LINE_3: Final = "pass --bench FILE with measured figures (format: docs/cost.md)"
VERDICT_USERS: Final = 1_000_000
# A tenth of the course design's estimate for 1,000,000 users.
BUDGET: Final = round(design.SCENARIOS[-1].stated.total / 10)
WORKLOAD_LABELS: Final = {
    "original": "original workload",
    "realistic": "realistic workload",
    "stream": "stream workload",
}
# The verdict is on what a real client does (a live stream); the polling one is shown beside it.
VERDICT_WORKLOADS: Final = ("stream", "realistic")


class ChartUnavailable(RuntimeError):
    """matplotlib is not installed."""


@dataclass(frozen=True, slots=True)
class Report:
    """Everything ``parley cost`` prints, computed once."""

    bench_source: str
    bench: BenchFile
    users: tuple[int, ...]
    prices: Prices
    inputs: ModelInputs
    workload: Workload
    results: tuple[ShapeCost, ...]
    verdict: Verdict  # on the stream workload
    polling_verdict: Verdict  # the same question on the realistic (polling) workload

    @classmethod
    def build(
        cls,
        bench_source: str,
        bench: BenchFile,
        users: Sequence[int],
        prices: Prices,
        inputs: ModelInputs,
        workload: Workload,
    ) -> Report:
        results = estimate(bench, users, prices, inputs, workload, WORKLOADS)
        at = VERDICT_USERS
        pool = (
            results if at in users else estimate(bench, [at], prices, inputs, workload, WORKLOADS)
        )
        verdict, polling = (
            cheapest_highly_available(pool, at, BUDGET, w) for w in VERDICT_WORKLOADS
        )
        return cls(
            bench_source,
            bench,
            tuple(users),
            prices,
            inputs,
            workload,
            tuple(results),
            verdict,
            polling,
        )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return (indent + "  ".join([first, *rest])).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _money(x: float) -> str:
    return f"{x:,.2f}"


def _short_count(n: int) -> str:
    """10,000 -> 10k, 1,000,000 -> 1M (the scenario headers, to keep the table narrow)."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000:,}M"
    return f"{n // 1_000:,}k" if n % 1_000 == 0 else f"{n:,}"


def _design_section() -> list[str]:
    out = [
        "1. The original course design's three scenarios, redone from its own inputs and formulas",
        f"   ({design.DESIGN_HOURS_PER_MONTH}-hour month), US$/month",
        "",
    ]
    items = [
        ("Fargate vCPU", "fargate_vcpu"),
        ("Fargate memory", "fargate_memory"),
        ("Fargate", "fargate"),
        ("DynamoDB RCU", "dynamodb_rcu"),
        ("DynamoDB WCU", "dynamodb_wcu"),
        ("DynamoDB", "dynamodb"),
        ("ElastiCache", "elasticache"),
        ("Total", "total"),
    ]
    headers = ["line item"]
    for sc in design.SCENARIOS:
        headers += [f"{_short_count(sc.users)}: design", "recomputed"]
    rows = []
    for label, attr in items:
        row = [label]
        for sc in design.SCENARIOS:
            stated: float = getattr(sc.stated, attr)
            exact: float = getattr(design.recompute(sc), attr)
            mark = "" if round(exact, 2) == stated else " *"
            row += [_money(stated), _money(exact) + mark]
        rows.append(row)
    out += _table(headers, rows)
    sums = ", ".join(_money(design.stated_total_from_subtotals(sc)) for sc in design.SCENARIOS)
    out += [
        "",
        "  * differs from the figure the course design printed (see the errors below).",
        f"  The course design's totals are the sums of its printed subtotals: {sums}.",
        "",
    ]
    return out


def _findings_section() -> list[str]:
    found = design.findings()
    out = [
        f"2. Errors in the course design's cost discussion ({len(found)}, each checked by "
        "arithmetic)",
        "",
    ]
    labels = {sc.key: f"{sc.users:,} users" for sc in design.SCENARIOS}
    for i, f in enumerate(found, 1):
        where = labels[f.scenario] if f.scenario else "all scenarios"
        out.append(f"  {i:2}. [{f.kind}] {f.key} ({where})")
        out += _wrap("design:", f.design_says)
        out += _wrap("correct:", f.correct)
        out += _wrap("why:", f.why)
    ok = design.checks()
    verified = (
        "reads/s "
        + ", ".join(f"{c.computed:,.2f}" for c in ok if c.key.startswith("reads-per-second"))
        + " (x0.7 keeps 70 % for a 30 % cut, x0.3 keeps 30 % for a 70 % cut); writes/s "
        + ", ".join(f"{c.computed:.2f}" for c in ok if c.key.startswith("writes-per-second"))
        + "; every RCU, WCU and ElastiCache line item; each total = the sum of its subtotals."
    )
    out += ["", *_wrap(f"Checked and right ({len(ok)}):", verified, indent=2, width=0), ""]
    return out


def _wrap(label: str, text: str, indent: int = 6, width: int = 9) -> list[str]:
    """``label text`` wrapped at ``_WIDTH``; continuation lines align under the text when
    ``width`` > 0 (the label column's width), else under the label plus two spaces."""
    head = " " * indent + label.ljust(width) + " "
    rest = " " * (indent + (width + 1 if width else 2))
    return textwrap.wrap(text, width=_WIDTH, initial_indent=head, subsequent_indent=rest)


def _banner(report: Report) -> list[str]:
    if not report.bench.sample:
        return []
    bar = "#" * 78
    return [
        f"  {bar}",
        f"  ##{SAMPLE_BANNER.upper().center(74)}##",
        f"  ##{_SAMPLE_LINE_2.center(74)}##",
        f"  ##{_SAMPLE_LINE_3.center(74)}##",
        f"  {bar}",
        "",
    ]


def _cell(result: ShapeCost, scope: bool = False) -> str:
    if not result.feasible:
        return "exceeds 1 process" if result.shape == "sqlite-single" else "cannot carry"
    value = result.design_scope_total if scope else result.total
    if value is None:
        return f"unknown (>= {_money(result.known_total)})" if not scope else "unknown"
    return _money(value)


def _parley_section(report: Report) -> list[str]:
    w, mi = report.workload, report.inputs
    out = ["3. Parley's model, US$/month (" + f"{mi.hours_per_month:g}-hour month)", ""]
    out += _banner(report)
    bench_note = report.bench.note if report.bench.note and not report.bench.sample else ""
    out += _wrap("bench:", report.bench_source + (f" ({bench_note})" if bench_note else ""), 2)
    out += _wrap(
        "workload:",
        f"{w.checks_per_user_per_minute:g} check/user/minute, {w.sends_per_user_per_day:g} "
        f"sends/user/day, {w.group_send_share:.0%} of sends to groups of {w.group_members:g}",
        2,
    )
    out += _wrap(
        "original:",
        f"{w.messages_per_check:g} messages/check (the course design's assumption): every "
        "check priced as one that finds messages",
        2,
    )
    out += _wrap(
        "realistic:",
        f"{w.realistic_messages_per_check:.4f} messages/check = {w.sends_per_user_per_day:g} "
        f"sends x {w.recipients_per_send:g} recipients / "
        f"{w.checks_per_user_per_minute * 1440:,.0f} checks a day; a check finds something "
        f"at most {min(1.0, w.realistic_messages_per_check):.2%} of the time, the rest are idle "
        "checks",
        2,
    )
    out += _wrap(
        "stream:",
        f"no polling: {mi.online_share:.0%} of users hold a live stream; each send is pushed to "
        f"{w.recipients_per_send * mi.online_share:g} open streams ({w.recipients_per_send:g} "
        f"recipients x {mi.online_share:g} online), each stream gets a keep-alive every "
        f"{mi.keepalive_seconds:g} s (PARLEY_KEEPALIVE_SECONDS; must stay below the load "
        f"balancer's idle timeout) and is reopened {mi.reconnects_per_user_per_hour:g} "
        "time(s) an hour",
        2,
    )
    out += _wrap(
        "inputs:",
        f"target utilisation {mi.target_utilisation:.0%}, peak x{mi.peak_factor:g}, Fargate "
        f"task {mi.task_vcpu:g} vCPU / {mi.task_memory_gb:g} GB (min {mi.min_tasks}), RDS "
        f"{'Multi-AZ' if mi.rds_multi_az else 'Single-AZ'}, DynamoDB {mi.dynamodb_mode}, "
        f"{mi.active_connections_per_user:g} kept-alive connection/user, "
        f"{mi.reconnects_per_user_per_hour:g} reconnect/user/hour, "
        f"{mi.new_connections_per_request:g} new connection/request, load balancer "
        f"{mi.load_balancer}, "
        + (
            f"{mi.idle_connection_kib:g} KiB per idle connection (set), "
            if not math.isnan(mi.idle_connection_kib)
            else f"{report.bench.idle_connection_bytes / 1024:.1f} KiB per idle connection "
            "(measured), "
            if report.bench.idle_connection_bytes is not None
            else "memory per idle connection unknown, "
        )
        + f"{mi.stored_bytes_per_message:g} B/message (input, where a shape has no measured "
        f"figure) kept {mi.retention_days:g} days",
        2,
    )
    out.append("")
    by_design_users = {sc.users: sc for sc in design.SCENARIOS}
    headers = ["total", *(f"{n:,} users" for n in report.users)]
    rows = [
        ["course design's estimate"]
        + [
            _money(by_design_users[n].stated.total) if n in by_design_users else "-"
            for n in report.users
        ]
    ]
    shapes = [s for s in SHAPES if s in report.bench.shapes]
    for scope in (False, True):
        for name in WORKLOADS:
            for shape in shapes:
                label = f"{shape}, {name}" + (" (design scope)" if scope else "")
                rows.append(
                    [label]
                    + [
                        _cell(r, scope)
                        for r in report.results
                        if r.shape == shape and r.workload == name
                    ]
                )
    out += _table(headers, rows)
    out += [
        "",
        *_wrap(
            "design scope",
            "= compute + database + cache, the items the course design priced; the totals add "
            "storage, "
            "the load balancer and data transfer out. unknown (>= X): a figure the bench did "
            "not measure leaves a line item without a price; X is the sum of the others.",
            indent=2,
            width=0,
        ),
        "",
    ]
    for r in report.results:
        out += _result_lines(r)
    out += _verdict_lines(report.verdict)
    out += _verdict_lines(report.polling_verdict, means=False)
    out += _prices_section(report.prices)
    return out


def _result_lines(r: ShapeCost) -> list[str]:
    head = f"  {r.shape} at {r.users:,} users, {WORKLOAD_LABELS[r.workload]}: "
    if not r.feasible:
        head += "cannot carry the load"
    elif r.total is None:
        head += f"unknown, >= ${_money(r.known_total)}/month (not measured: {', '.join(r.unknown)})"
    else:
        head += f"${_money(r.total)}/month"
    if r.highly_available:
        head += " [highly available]"
    ld = r.load
    bound = "CPU" if ld.app_vcpus_by_cpu >= ld.app_vcpus_by_throughput else "throughput"
    rates = ld.requests_per_second
    reads = _maybe(ld.storage_reads_per_second, "{:,.0f} reads/s")
    writes = _maybe(ld.storage_writes_per_second, "{:,.0f} writes/s")
    if ld.live_stream:
        requests = (
            f"{rates['send']:,.1f} sends/s, {rates['push']:,.1f} pushes/s, "
            f"{rates['tick']:,.1f} keep-alive ticks/s, {rates['open']:,.1f} stream opens/s"
        )
        held = "streams"
    else:
        checks = rates["check"] + rates.get("idle", 0.0)
        idle = f" ({rates['idle']:,.1f} idle)" if "idle" in rates else ""
        requests = f"{checks:,.1f} checks/s{idle} + {rates['send']:,.1f} sends/s"
        held = "connections"
    app = f"app {ld.app_vcpus:.2f} vCPU ({bound}-bound)"
    if ld.missing_operations:
        app = f"app >= {ld.app_vcpus:.2f} vCPU (without {', '.join(ld.missing_operations)})"
    out = textwrap.wrap(head, width=_WIDTH, subsequent_indent="    ")
    out += _wrap(
        "load:",
        f"{requests}; {app}; storage {reads}, {writes}; {ld.connections:,.0f} {held} "
        f"held, {ld.new_connections_per_second:,.1f} new/s",
        indent=4,
        width=0,
    )
    item_rows = [
        (
            item.name,
            ("unknown" if item.monthly is None else _money(item.monthly))
            if item.included
            else f"({'unknown' if item.monthly is None else _money(item.monthly)})",
            item.detail + ("" if item.included else "  [not counted]"),
        )
        for item in r.line_items
    ]
    name_w = max(len(a) for a, _, _ in item_rows)
    money_w = max(len(b) for _, b, _ in item_rows)
    for a, b, c in item_rows:
        label = f"{a.ljust(name_w)}  {b.rjust(money_w)}"
        out += _wrap(label, c, indent=4, width=len(label) + 1)
    for n in r.notes:
        out += _wrap("note:", n, indent=4, width=0)
    out.append("")
    return out


def _maybe(value: float | None, fmt: str) -> str:
    return "unknown" + fmt.partition("}")[2] if value is None else fmt.format(value)


def _verdict_lines(verdict: Verdict, means: bool = True) -> list[str]:
    what = (
        "the verdict, on what a real client does"
        if verdict.workload == "stream"
        else "beside it, for a client that polls"
    )
    head = (
        f"  Highly available at {verdict.users:,} users, {WORKLOAD_LABELS[verdict.workload]} "
        f"({what}; budget ${_money(verdict.budget)}: a tenth of the course design's "
        f"${_money(design.SCENARIOS[-1].stated.total)}):"
    )
    out = [
        *textwrap.wrap(head, width=_WIDTH, subsequent_indent="    "),
        *_wrap("verdict:", verdict.text, indent=4, width=0),
    ]
    if means:
        out += _wrap(
            "means:",
            "at least two app tasks (spread over two zones), a database with a standby (RDS "
            "Multi-AZ; DynamoDB keeps three zones itself), Redis with a replica",
            indent=4,
            width=0,
        )
    return [*out, ""]


def _prices_section(prices: Prices) -> list[str]:
    out = ["  Prices (us-east-1 on-demand; editable with --price NAME=VALUE or --prices FILE):"]
    for f in dataclasses.fields(Prices):
        status = SOURCES[f.name][0] if f.name in SOURCES else "override"
        if f.name in TABLES:
            table = getattr(prices, f.name)
            rows = ", ".join(f"{c.name} {c.hourly:g}" for c in table)
            out += _wrap(f"{f.name} [{status}]:", f"{rows} $/h", indent=4, width=0)
        else:
            out.append(f"    {f.name} = {getattr(prices, f.name):g} [{status}]")
    out += ["  Sources and caveats: docs/cost.md.", ""]
    return out


def render_text(report: Report) -> str:
    lines = ["parley cost: capacity and cost model", ""]
    lines += _design_section()
    lines += _findings_section()
    lines += _parley_section(report)
    return "\n".join(lines).rstrip() + "\n"


def render_json(report: Report) -> str:
    scenarios = [
        {
            "key": sc.key,
            "label": sc.label,
            "users": sc.users,
            "inputs": {
                k: v
                for k, v in dataclasses.asdict(sc).items()
                if k not in ("stated", "key", "label")
            },
            "stated": dataclasses.asdict(sc.stated),
            "recomputed": dataclasses.asdict(design.recompute(sc)),
            "stated_total_from_subtotals": design.stated_total_from_subtotals(sc),
        }
        for sc in design.SCENARIOS
    ]
    doc: dict[str, Any] = {
        "course_design": {
            "hours_per_month": design.DESIGN_HOURS_PER_MONTH,
            "scenarios": scenarios,
            "findings": design.findings(),
            "checks": design.checks(),
        },
        "parley": {
            "sample": report.bench.sample,
            "banner": SAMPLE_BANNER if report.bench.sample else None,
            "bench_source": report.bench_source,
            "workload": report.workload,
            "inputs": report.inputs,
            "prices": report.prices,
            "price_sources": {k: {"status": s, "note": n} for k, (s, n) in SOURCES.items()},
            "results": report.results,
            "verdict": _verdict_json(report.verdict),
            "verdicts": {
                v.workload: _verdict_json(v) for v in (report.verdict, report.polling_verdict)
            },
        },
    }
    return msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n"


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {
        "workload": verdict.workload,
        "users": verdict.users,
        "budget": verdict.budget,
        "shape": verdict.best.shape if verdict.best else None,
        "total": verdict.best.total if verdict.best else None,
        "within_budget": verdict.within,
        "text": verdict.text,
    }


def _chart_users(users: Sequence[int]) -> list[int]:
    low = min([1_000, *users])
    high = max([10_000_000, *users])
    steps = 48
    a, b = math.log10(low), math.log10(high)
    return sorted({round(10 ** (a + (b - a) * i / steps)) for i in range(steps + 1)} | set(users))


def write_chart(report: Report, path: Path) -> None:
    """Draw $/month against users (log-log) per shape and the course design's three estimates."""
    try:
        import matplotlib
    except ImportError:
        raise ChartUnavailable(
            "--chart needs matplotlib, which is not installed; install it with "
            "`pip install matplotlib` (or run without --chart)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = _chart_users(report.users)
    results = estimate(report.bench, grid, report.prices, report.inputs, report.workload, WORKLOADS)
    fig, ax = plt.subplots(figsize=(10, 6.4), dpi=110)
    colours = dict(zip(SHAPES, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    styles = {"original": ":", "realistic": "--", "stream": "-"}
    try:
        for name in WORKLOADS:
            for shape in (s for s in SHAPES if s in report.bench.shapes):
                mine = [r for r in results if r.shape == shape and r.workload == name]
                points = [(r.users, r.total) for r in mine if r.total]
                floor = not points
                if floor:  # unknown figures: draw the known part, marked as a lower bound
                    points = [(r.users, r.known_total) for r in mine if r.feasible]
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                label = f"{shape}, {WORKLOAD_LABELS[name]}"
                if floor:
                    unknown = list(dict.fromkeys(u for r in mine for u in r.unknown))
                    label += f" (lower bound: {', '.join(unknown)} not measured)"
                (line,) = ax.plot(
                    xs,
                    ys,
                    styles[name],
                    label=label,
                    linewidth=1 if floor else 2,
                    color=colours[shape],
                    alpha=0.6 if floor else 1.0,
                )
                if len(points) < len(grid) and not floor:
                    ax.plot(
                        [xs[-1]],
                        [ys[-1]],
                        marker="x",
                        markersize=10,
                        color=line.get_color(),
                        linestyle="none",
                    )
                    ax.annotate(
                        "one-process ceiling",
                        (xs[-1], ys[-1]),
                        textcoords="offset points",
                        xytext=(6, -12),
                        fontsize=8,
                        color=line.get_color(),
                    )
        ax.axhline(BUDGET, color="grey", linewidth=1, linestyle=":")
        ax.annotate(
            f"${BUDGET:,}: a tenth of the course design's 1M-user estimate",
            (grid[0], BUDGET),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
            color="grey",
        )
        design_x = [sc.users for sc in design.SCENARIOS]
        ax.plot(
            design_x,
            [sc.stated.total for sc in design.SCENARIOS],
            "k--o",
            label="course design's estimate as printed (no storage, ALB or data transfer)",
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("users")
        ax.set_ylabel("US$ per month")
        title = "parley cost: monthly cost by deployment shape"
        ax.set_title(title)
        if report.bench.sample:
            fig.text(
                0.5,
                0.5,
                SAMPLE_BANNER.upper(),
                fontsize=30,
                color="red",
                alpha=0.18,
                ha="center",
                va="center",
                rotation=20,
            )
            ax.set_title(f"{title}\n{SAMPLE_BANNER}", color="firebrick")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
