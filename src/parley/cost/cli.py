"""``parley cost``: the original course design's cost scenarios, their errors, and Parley's
measured cost model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from parley.cost.course_design import SCENARIOS
from parley.cost.measured import BenchError, load_bench
from parley.cost.model import ModelError, ModelInputs, with_settings
from parley.cost.prices import PriceError, Prices, load_prices_file, with_overrides
from parley.cost.report import ChartUnavailable, Report, render_json, render_text, write_chart
from parley.cost.sample import sample_bench

__all__ = ["main"]

_SUFFIXES = {"k": 1_000, "m": 1_000_000}


def _users(text: str) -> int:
    raw = text.strip().lower().replace(",", "").replace("_", "")
    scale = 1
    if raw and raw[-1] in _SUFFIXES:
        scale, raw = _SUFFIXES[raw[-1]], raw[:-1]
    try:
        value = float(raw) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a user count: {text!r}") from None
    if value < 1 or value != int(value) or value > 10**10:
        raise argparse.ArgumentTypeError(f"user count must be a whole number >= 1: {text!r}")
    return int(value)


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley cost",
        description=(
            "Redo the three cost scenarios of the original course design from its own inputs, "
            "list the errors in its arithmetic, then cost Parley's deployment shapes from "
            "benchmark figures (the built-in SAMPLE when no --bench is given)."
        ),
        epilog="Formulas, the bench format and price sources: docs/cost.md.",
    )
    parser.add_argument(
        "--bench", type=Path, metavar="FILE", help="bench JSON (format parley-bench/1)"
    )
    parser.add_argument(
        "--users",
        type=_users,
        nargs="+",
        metavar="N",
        help="user counts to cost (accepts 10k, 1M, 1,000,000); default: the course design's "
        + ", ".join(f"{sc.users:,}" for sc in SCENARIOS),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--chart", type=Path, metavar="OUT.png", help="draw $/month vs users")
    parser.add_argument(
        "--price",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a price, e.g. alb_lcu_hour=0.008 or rds_classes/db.m7g.large=0.17",
    )
    parser.add_argument(
        "--prices", type=Path, metavar="FILE.json", help="JSON object of price overrides"
    )
    parser.add_argument(
        "--utilisation", type=float, metavar="U", help="target CPU utilisation (default 0.6)"
    )
    parser.add_argument("--task-vcpu", type=float, metavar="V", help="Fargate task vCPU (1)")
    parser.add_argument("--task-memory-gb", type=float, metavar="G", help="Fargate task GB (2)")
    parser.add_argument(
        "--set",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other model input or workload figure, e.g. peak_factor=2, rds_multi_az=false, "
        "new_connections_per_request=0, sends_per_user_per_day=20",
    )
    return parser


def _fail(message: str, code: int = 2) -> int:
    print(f"parley cost: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.bench is not None:
            bench, source = load_bench(args.bench), str(args.bench)
        else:
            bench, source = sample_bench(), "built-in sample (docs/sample-bench.json)"
        prices = Prices()
        if args.prices is not None:
            prices = load_prices_file(args.prices, prices)
        prices = with_overrides(prices, dict(args.price))
        settings = dict(args.set)
        for flag, name in (
            (args.utilisation, "target_utilisation"),
            (args.task_vcpu, "task_vcpu"),
            (args.task_memory_gb, "task_memory_gb"),
        ):
            if flag is not None:
                settings[name] = str(flag)
        inputs, workload = with_settings(ModelInputs(), bench.workload, settings)
    except (BenchError, PriceError, ModelError) as exc:
        return _fail(str(exc))
    users = tuple(args.users) if args.users else tuple(sc.users for sc in SCENARIOS)
    report = Report.build(source, bench, users, prices, inputs, workload)
    if args.chart is not None:
        try:
            write_chart(report, args.chart)
        except ChartUnavailable as exc:
            return _fail(str(exc), code=1)
        except OSError as exc:
            return _fail(f"cannot write chart {str(args.chart)!r}: {exc.strerror}", code=1)
    sys.stdout.write(render_json(report) if args.json else render_text(report))
    if args.chart is not None and not args.json:
        print(f"chart written to {args.chart}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
