"""Fixtures for the deployment tests: import paths and an offline Pulumi harness.

``synth(cfg)`` runs the Pulumi program for a :class:`StackConfig` under
``pulumi.runtime.set_mocks``: no CLI, no engine, no cloud. Every resource the program
registers is recorded with its resolved inputs, and the stack's exports are resolved, so tests
can assert on exactly what ``pulumi up`` would ask AWS for.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SRC = ROOT / "src"

if str(DEPLOY) not in sys.path:
    sys.path.insert(0, str(DEPLOY))
if importlib.util.find_spec("parley") is None and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

HAVE_PULUMI = all(
    importlib.util.find_spec(name) is not None for name in ("pulumi", "pulumi_aws", "pulumi_random")
)
PULUMI_MISSING = (
    "pulumi, pulumi-aws and pulumi-random are not installed"
    " (pip install -r deploy/requirements.txt)"
)
MOCK_RANDOM = "MockRandomValue"  # what the mocked random provider generates, repeated

MOCK_ZONES = ["zz-test-1a", "zz-test-1b", "zz-test-1c"]


@dataclass
class Registered:
    """One resource the program registered: its type token, logical name, inputs, id."""

    typ: str
    name: str
    inputs: dict[str, Any]
    id: str
    state: dict[str, Any]


@dataclass
class Synth:
    """What one run of the program produced."""

    resources: list[Registered]
    outputs: dict[str, Any]
    calls: list[str] = field(default_factory=list)

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def named(self, name: str) -> Registered:
        found = [r for r in self.resources if r.name == name]
        assert len(found) == 1, f"expected one resource named {name!r}, found {len(found)}"
        return found[0]

    def maybe(self, name: str) -> Registered | None:
        found = [r for r in self.resources if r.name == name]
        return found[0] if found else None

    def by_id(self, resource_id: str) -> Registered:
        found = [r for r in self.resources if r.id == resource_id]
        assert len(found) == 1, f"no single resource with id {resource_id!r}"
        return found[0]


def _service_of(typ: str) -> str:
    # "aws:dynamodb/table:Table" -> "dynamodb"
    return typ.split(":")[1].split("/")[0] if ":" in typ else "mock"


class PulumiLoop:
    """The event loop (and worker threads) all Pulumi work of the test session runs on.

    Pulumi drives its runtime with ``run_until_complete`` on the thread's current loop and
    keeps global state (the root stack resource) tied to it, so every run must use the same
    loop. Its calls to the (mock) engine run in the loop's default executor, where Pulumi
    gives each worker thread an event loop of its own. Both kinds of loop are created here
    and closed when the session ends, so nothing leaks into the rest of the test run.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._worker_loops: list[asyncio.AbstractEventLoop] = []
        self._executor = ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="pulumi-mocks", initializer=self._init_worker
        )
        self.loop.set_default_executor(self._executor)

    def _init_worker(self) -> None:
        worker_loop = asyncio.new_event_loop()
        asyncio.set_event_loop(worker_loop)
        self._worker_loops.append(worker_loop)

    @contextmanager
    def current(self) -> Iterator[asyncio.AbstractEventLoop]:
        # Whatever loop the thread had (read without creating one) is put back afterwards.
        previous = getattr(getattr(asyncio.get_event_loop_policy(), "_local", None), "_loop", None)
        asyncio.set_event_loop(self.loop)
        try:
            yield self.loop
        finally:
            asyncio.set_event_loop(previous)

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
            self._executor.shutdown(wait=True)
            for worker_loop in self._worker_loops:
                worker_loop.close()


_PULUMI_LOOP: PulumiLoop | None = None


def pulumi_event_loop() -> PulumiLoop:
    global _PULUMI_LOOP
    if _PULUMI_LOOP is None:
        _PULUMI_LOOP = PulumiLoop()
    return _PULUMI_LOOP


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _PULUMI_LOOP is not None:
        _PULUMI_LOOP.close()


if HAVE_PULUMI:
    import pulumi

    class RecordingMocks(pulumi.runtime.Mocks):
        """Answers like AWS would, with made-up identifiers, and records everything."""

        def __init__(self, region: str) -> None:
            self.region = region
            self.resources: list[Registered] = []
            self.calls: list[str] = []

        def new_resource(
            self, args: pulumi.runtime.MockResourceArgs
        ) -> tuple[str | None, dict[Any, Any]]:
            inputs = dict(args.inputs)
            resource_id = f"{args.name}-id"
            state = dict(inputs)
            state.setdefault("name", args.name)
            service = _service_of(args.typ)
            state["arn"] = f"arn:aws:{service}:{self.region}:mock-account:{args.name}"
            if args.typ == "aws:dynamodb/table:Table":
                state["arn"] = f"arn:aws:dynamodb:{self.region}:mock-account:table/{inputs['name']}"
            elif args.typ == "aws:s3/bucket:Bucket":
                state.setdefault("bucket", f"{args.name}-abc123")
                state["arn"] = f"arn:aws:s3:::{state['bucket']}"
            elif args.typ == "aws:lb/loadBalancer:LoadBalancer":
                state["dnsName"] = f"{args.name}.{self.region}.elb.example"
            elif args.typ == "aws:ecr/repository:Repository":
                state["repositoryUrl"] = f"registry.example/{args.name}"
            elif args.typ == "aws:elasticache/replicationGroup:ReplicationGroup":
                state["primaryEndpointAddress"] = f"{args.name}.cache.example"
            elif args.typ == "aws:secretsmanager/secret:Secret":
                state["arn"] = (
                    f"arn:aws:secretsmanager:{self.region}:mock-account:secret:{args.name}-AbC123"
                )
            elif args.typ == "random:index/randomPassword:RandomPassword":
                length = int(inputs["length"])
                state["result"] = (MOCK_RANDOM * length)[:length]
            self.resources.append(Registered(args.typ, args.name, inputs, resource_id, state))
            return resource_id, state

        def call(
            self, args: pulumi.runtime.MockCallArgs
        ) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
            self.calls.append(args.token)
            if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
                return {
                    "id": self.region,
                    "names": MOCK_ZONES,
                    "zoneIds": [f"zz1-az{i}" for i in range(len(MOCK_ZONES))],
                    "groupNames": [self.region],
                }, []
            raise AssertionError(f"unexpected provider call {args.token}")

    def _synthesize(cfg: Any) -> Synth:
        from parley_infra.stack import build_stack

        mocks = RecordingMocks(cfg.region)
        outputs: dict[str, Any] = {}

        @pulumi.runtime.test  # type: ignore[untyped-decorator]
        def run() -> pulumi.Output[None]:
            exports = build_stack(cfg).exports()
            keys = list(exports)
            return pulumi.Output.all(*(exports[key] for key in keys)).apply(
                lambda values: outputs.update(zip(keys, values, strict=True))
            )

        with pulumi_event_loop().current():
            pulumi.runtime.set_mocks(mocks, project="parley", stack=cfg.stack, preview=False)
            run()
        return Synth(resources=list(mocks.resources), outputs=outputs, calls=list(mocks.calls))

    def _run_entry_point(config: dict[str, str], stack: str) -> Synth:
        """Run ``deploy/__main__.py`` itself, as ``pulumi up`` would, with ``config``."""
        import runpy

        from pulumi.runtime import config as runtime_config

        mocks = RecordingMocks(config.get("aws:region", "eu-west-1"))
        saved = dict(runtime_config.CONFIG.get())

        @pulumi.runtime.test  # type: ignore[untyped-decorator]
        def run() -> None:
            runpy.run_path(str(DEPLOY / "__main__.py"), run_name="__main__")

        with pulumi_event_loop().current():
            pulumi.runtime.set_mocks(mocks, project="parley", stack=stack, preview=False)
            pulumi.runtime.set_all_config(config)
            try:
                run()
            finally:
                pulumi.runtime.set_all_config(saved)
        return Synth(resources=list(mocks.resources), outputs={}, calls=list(mocks.calls))


@pytest.fixture(scope="session")
def run_entry_point() -> Callable[[dict[str, str], str], Synth]:
    """``run_entry_point(config, stack)`` runs the real Pulumi entry point under mocks."""
    if not HAVE_PULUMI:
        pytest.skip(PULUMI_MISSING)
    return _run_entry_point


@pytest.fixture(scope="session")
def synth() -> Iterator[Callable[..., Synth]]:
    """``synth(cfg)`` -> :class:`Synth`; results are cached per configuration."""
    if not HAVE_PULUMI:
        pytest.skip(PULUMI_MISSING)
    cache: dict[Any, Synth] = {}

    def run(cfg: Any) -> Synth:
        key = repr(cfg)
        if key not in cache:
            cache[key] = _synthesize(cfg)
        return cache[key]

    yield run


@pytest.fixture
def pulumi_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """Makes the session's Pulumi event loop current for one test."""
    with pulumi_event_loop().current() as loop:
        yield loop


@pytest.fixture(scope="session")
def mock_zones() -> list[str]:
    """The availability zones the mocked AWS reports."""
    return list(MOCK_ZONES)


@pytest.fixture(scope="session")
def synth_uncached() -> Callable[..., Synth]:
    """Like ``synth`` but never cached (for runs under monkeypatching)."""
    if not HAVE_PULUMI:
        pytest.skip(PULUMI_MISSING)
    return _synthesize
