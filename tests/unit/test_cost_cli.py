"""``parley cost`` end to end in-process: bench and price inputs, text, JSON and the chart."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from parley.cost.cli import main
from parley.cost.measured import BenchError, parse_bench
from parley.cost.prices import PriceError, Prices, load_prices_file, with_overrides
from parley.cost.sample import SAMPLE, sample_bench, sample_json

REPO = Path(__file__).resolve().parents[2]


def _bench(**changes: object) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(sample_json())
    doc.update(sample=False, note="unit-test bench")
    doc.update(changes)
    return doc


def _write(tmp_path: Path, doc: object, name: str = "bench.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_repository_sample_file_is_the_built_in_sample_and_says_so() -> None:
    text = (REPO / "docs" / "sample-bench.json").read_text()
    assert text == sample_json()
    doc = json.loads(text)
    assert doc["sample"] is True
    assert "SAMPLE INPUT, not measured" in doc["note"]
    assert sample_bench().sample is True
    assert set(SAMPLE["shapes"]) == {"sqlite-single", "postgres-redis", "dynamodb-fargate"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "parley-bench/2"}, "format must be 'parley-bench/1'"),
        ({"shapes": {}}, "shapes is empty"),
        ({"shapes": {"mongo": SAMPLE["shapes"]["sqlite-single"]}}, "unknown shape 'mongo'"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bench_errors_name_the_problem(change: dict[str, object], message: str) -> None:
    with pytest.raises(BenchError, match=message):
        parse_bench(json.dumps(_bench(**change)), "b.json")


def test_bench_errors_point_at_the_field() -> None:
    doc = _bench()
    ops = doc["shapes"]["postgres-redis"]["operations"]
    ops["send"]["cpu_seconds_per_request"] = -1
    with pytest.raises(BenchError, match=r"\$\.shapes\.postgres-redis\.operations\.send\.cpu_"):
        parse_bench(json.dumps(doc), "b.json")
    del ops["send"]
    with pytest.raises(BenchError, match="missing send"):
        parse_bench(json.dumps(doc), "b.json")
    ops["send"] = {"requests_per_second": "fast", "cpu_seconds_per_request": 0.001}
    with pytest.raises(BenchError, match="Expected `float`"):
        parse_bench(json.dumps(doc), "b.json")
    with pytest.raises(BenchError, match="not valid JSON"):
        parse_bench("{", "b.json")


def test_price_overrides() -> None:
    p = with_overrides(Prices(), {"alb_lcu_hour": "0.01", "rds_classes/db.m7g.large": 0.2})
    assert p.alb_lcu_hour == 0.01
    assert next(c for c in p.rds_classes if c.name == "db.m7g.large").hourly == 0.2
    assert next(c for c in p.rds_classes if c.name == "db.t4g.micro").hourly == 0.016  # untouched
    cases: list[tuple[dict[str, object], str]] = [
        ({"alb_lcu": 1}, "unknown price 'alb_lcu'"),
        ({"alb_hour": -1}, "must be a finite number >= 0"),
        ({"alb_hour": "cheap"}, "expected a number"),
        ({"rds_classes/db.x9.huge": 1}, "no class 'db.x9.huge'"),
        ({"gpu_classes/x": 1}, "unknown price table"),
        ({"ec2_classes": []}, "non-empty list"),
    ]
    for bad, message in cases:
        with pytest.raises(PriceError, match=message):
            with_overrides(Prices(), bad)


def test_prices_file_replaces_a_table(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"ec2_classes": [{"name": "a1.huge", "vcpu": 64, "memory_gib": 128, "hourly": 1.5}]},
        "prices.json",
    )
    prices = load_prices_file(path, Prices())
    assert [c.name for c in prices.ec2_classes] == ["a1.huge"]
    with pytest.raises(PriceError, match="cannot read prices file"):
        load_prices_file(tmp_path / "missing.json", Prices())


def test_default_run_prints_the_course_design_the_errors_and_a_loud_sample_banner(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    for figure in ("113.31", "113.71 *", "487.33", "4,401.26", "95.94 *", "87.44 *", "153.62 *"):
        assert figure in out
    assert "Errors in the course design's cost discussion (13" in out
    assert "10,00,000,000 writes/day" in out
    assert "SAMPLE INPUT, NOT MEASURED" in out
    assert (
        out.index("1. The original course design's")
        < out.index("2. Errors")
        < out.index("3. Parley's model")
    )
    assert "exceeds 1 process" in out  # sqlite-single at 1,000,000 users with the sample


def test_a_measured_bench_has_no_banner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--bench", str(_write(tmp_path, _bench())), "--users", "25k"]) == 0
    out = capsys.readouterr().out
    assert "SAMPLE INPUT" not in out
    assert "25,000 users" in out
    assert "(unit-test bench)" in " ".join(out.split())  # the note, however the line wraps


def _json_run(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["--json", *args]) == 0
    doc: dict[str, object] = json.loads(capsys.readouterr().out)
    return doc


def _total(doc: dict[str, object], shape: str, users: int, workload: str = "original") -> float:
    results = doc["parley"]["results"]  # type: ignore[index]
    (match,) = [
        r
        for r in results
        if r["shape"] == shape and r["users"] == users and r["workload"] == workload
    ]
    total: float = match["total"]
    return total


def test_json_output_and_price_overrides_flow_through(capsys: pytest.CaptureFixture[str]) -> None:
    alb = ("--set", "load_balancer=alb")
    doc = _json_run(capsys, "--users", "1M", *alb)
    design = doc["course_design"]
    assert len(design["findings"]) == 13  # type: ignore[index]
    assert [s["stated_total_from_subtotals"] for s in design["scenarios"]] == [  # type: ignore[index]
        113.31,
        487.33,
        4401.26,
    ]
    assert doc["parley"]["sample"] is True  # type: ignore[index]
    base = _total(doc, "postgres-redis", 1_000_000)
    free_lcu = _json_run(capsys, "--users", "1M", "--price", "alb_lcu_hour=0", *alb)
    alb_monthly = next(
        i["monthly"]
        for r in doc["parley"]["results"]  # type: ignore[index]
        if r["shape"] == "postgres-redis" and r["workload"] == "original"
        for i in r["line_items"]
        if i["name"] == "ALB"
    )
    # only the LCU part of the ALB disappears: 0.0225 x 730 = 16.425 remains
    assert _total(free_lcu, "postgres-redis", 1_000_000) == pytest.approx(
        base - alb_monthly + 16.425
    )


def test_flags_reach_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    base = _total(_json_run(capsys, "--users", "1M"), "dynamodb-fargate", 1_000_000)
    busier = _total(
        _json_run(capsys, "--users", "1M", "--utilisation", "0.3", "--set", "peak_factor=2"),
        "dynamodb-fargate",
        1_000_000,
    )
    assert busier > base


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--price", "nothing=1"], "unknown price 'nothing'"),
        (["--set", "target_utilisation=2"], "target_utilisation must be in (0, 1]"),
        (["--task-vcpu", "3"], "not a Fargate size"),
        (["--bench", "/nonexistent/bench.json"], "cannot read bench file"),
    ],
)
def test_input_errors_exit_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("bad", ["abc", "0", "1.5", "-3"])
def test_bad_user_counts_are_usage_errors(bad: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--users", bad])
    assert exc.value.code == 2


def test_user_counts_accept_suffixes_and_separators(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json_run(capsys, "--users", "10k", "1,500", "2M")
    users = {r["users"] for r in doc["parley"]["results"]}  # type: ignore[index]
    assert users == {10_000, 1_500, 2_000_000}


def test_chart_is_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "cost.png"
    assert main(["--chart", str(out)]) == 0
    assert f"chart written to {out}" in capsys.readouterr().out
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # a drawn chart, not an empty canvas


def test_chart_without_matplotlib_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert main(["--chart", str(tmp_path / "c.png")]) == 1
    err = capsys.readouterr().err
    assert "needs matplotlib" in err and "pip install matplotlib" in err
    assert not (tmp_path / "c.png").exists()


def test_the_bench_example_in_the_docs_is_valid() -> None:
    text = (REPO / "docs" / "cost.md").read_text()
    example = text.split("```json\n", 1)[1].split("```", 1)[0]
    bench = parse_bench(example, "docs/cost.md")
    assert bench.sample is False
    assert bench.shapes["dynamodb-fargate"].operations["check"].read_units_per_read == 0.5


def test_text_shows_the_three_workloads_and_both_verdicts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--users", "1M"]) == 0
    out = capsys.readouterr().out
    for name in ("original", "realistic", "stream"):
        assert f"postgres-redis, {name}" in out
        assert f"postgres-redis at 1,000,000 users, {name} workload: $" in out
    assert "NLB (TCP, TLS in Parley)" in out and "ALB" in out
    assert "keep-alive ticks/s" in out and "streams held" in out
    flat = " ".join(out.split())
    stream = flat.index("Highly available at 1,000,000 users, stream workload (the verdict")
    polling = flat.index("Highly available at 1,000,000 users, realistic workload (beside it")
    assert stream < polling
    assert flat[stream:polling].count("cheapest highly available shape: postgres-redis") == 1
    assert "cheapest highly available shape: postgres-redis" in flat[polling:]


def test_sample_has_live_stream_figures_for_every_shape() -> None:
    for shape in sample_bench().shapes.values():
        for op in ("tick", "push", "open"):
            profile = shape.operations[op]
            # written as parley bench writes them: requests_per_second = 1 / CPU
            assert profile.requests_per_second == pytest.approx(
                1 / profile.cpu_seconds_per_request, rel=1e-3
            )


def test_json_carries_the_three_workloads_and_both_verdicts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = _json_run(capsys, "--users", "1M", "--set", "online_share=0.5")
    parley = doc["parley"]
    assert {r["workload"] for r in parley["results"]} == {  # type: ignore[index]
        "original",
        "realistic",
        "stream",
    }
    assert parley["inputs"]["online_share"] == 0.5  # type: ignore[index]
    verdicts = parley["verdicts"]  # type: ignore[index]
    assert set(verdicts) == {"stream", "realistic"}
    assert parley["verdict"] == verdicts["stream"]  # type: ignore[index]
    assert verdicts["stream"]["shape"] == "postgres-redis"
    assert _total(doc, "postgres-redis", 1_000_000, "stream") < _total(
        doc, "postgres-redis", 1_000_000, "realistic"
    )


def test_a_measured_bench_without_stream_figures_prices_the_stream_as_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads((REPO / "docs" / "bench-results.json").read_text())
    for shape in doc["shapes"].values():  # as written before parley bench measured streams
        shape.pop("stored_bytes_per_message", None)
        for op in ("tick", "push", "open"):
            shape["operations"].pop(op, None)
    bench = _write(tmp_path, doc)
    assert main(["--bench", str(bench), "--users", "1M"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "postgres-redis, stream unknown (>= " in flat
    assert (
        "stream workload (the verdict, on what a real client does; budget $440.00: a tenth of "
        "the course design's $4,401.26): verdict: unknown" in flat
    )
    assert "not measured: live-stream tick, live-stream push, live-stream open" in flat
    assert "realistic workload (beside it, for a client that polls" in flat
