"""Imports run downward only: the layers of ``src/parley`` and the packages they hold.

Each module belongs to one layer (its top-level package, or the module itself at the top
of ``src/parley``). A module may import its own layer and any layer below it; the shared
leaves (settings, logs, metrics) may be imported from every layer and themselves import
only the lowest layers. Every import counts, including those under ``TYPE_CHECKING`` and
inside functions: a type-only import upward still ties a lower layer to a higher one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = SRC / "parley"

# Lowest first. A layer may import its own and every earlier one.
LAYERS: list[set[str]] = [
    {"__init__", "domain", "errors"},  # what Parley is: models, rules, domain errors
    {"storage", "media"},  # the storage port and its adapters; blob stores for uploads
    {"cache"},  # the cache ports (directory, changes, wake-ups) and their adapters
    {"services", "startup"},  # the rules applied to requests; the checks before serving
    {"app"},  # the composition root
    {"http"},  # the HTTP API over the services
    {"cli", "__main__", "bench", "client", "cost"},  # commands and tools
]
# Shared leaves: every layer may import them; they import only the layers up to SHARED_TOP.
SHARED = {"settings", "logs", "metrics"}
SHARED_TOP = 1  # settings names storage tables (storage.dynamodb_tables)

RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def layer_of(module: str) -> str:
    """``parley.cache.memory`` -> ``cache``; ``parley.app`` -> ``app``; ``parley`` ->
    ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(module: str, path: Path, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, imported parley module) for every import in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "parley":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "parley":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if sub in known else base


def violations(found: dict[str, Path], src: Path = SRC) -> list[str]:
    """Every import that goes upward, and every cycle between layers."""
    known = set(found)
    problems: list[str] = []
    edges: dict[str, set[str]] = {}
    for module, path in found.items():
        source = layer_of(module)
        for line, target in imports(module, path, known):
            into = layer_of(target)
            if into == source:
                continue
            edges.setdefault(source, set()).add(into)
            where = f"{path.relative_to(src)}:{line} imports {target}"
            if source in SHARED:
                if into in SHARED or RANK[into] <= SHARED_TOP:
                    continue
                problems.append(f"{where}: a shared leaf may import only the lowest layers")
            elif into in SHARED:
                continue
            elif RANK[into] > RANK[source]:
                problems.append(f"{where}: {source} may not import {into} (a higher layer)")
    problems += [f"import cycle between {' -> '.join(cycle)}" for cycle in cycles(edges)]
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Cycles between layers, found as the back edges of a depth-first search (at least
    one through every group of layers that import each other)."""
    found: list[list[str]] = []
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            found.append([*path[path.index(node) :], node])
            return
        if node in done:
            return
        for target in sorted(edges.get(node, ())):
            walk(target, [*path, node])
        done.add(node)

    for start in sorted(edges):
        walk(start, [])
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = {layer_of(m) for m in modules()} - set(RANK) - SHARED
    assert not unplaced, f"give these a layer in LAYERS or SHARED: {sorted(unplaced)}"


def test_no_import_runs_upward_and_no_layers_import_each_other() -> None:
    problems = violations(modules())
    assert not problems, "\n".join(problems)


def test_only_the_composition_root_picks_cache_implementations() -> None:
    """Services see the cache ports (``parley.cache.base``) only; which implementation
    serves them is decided in ``parley.app``. (The HTTP rate limiter shares the Redis
    link itself, not a port's implementation.)"""
    found = modules()
    allowed = {
        "services": {"parley.cache.base"},
        "http": {"parley.cache.base", "parley.cache.redis_link"},
    }
    problems = []
    for module, path in found.items():
        layer = layer_of(module)
        if layer in ("cache", "app"):
            continue
        for line, target in imports(module, path, set(found)):
            if layer_of(target) == "cache" and target not in allowed.get(layer, set()):
                problems.append(f"{path.relative_to(SRC)}:{line} imports {target}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # the directory cache importing the services it serves
            {
                "parley/cache/directory.py": "from parley.services.directory import Directory",
                "parley/services/directory.py": "from parley.cache.base import Changes",
            },
            ["cache may not import services", "import cycle between cache -> services -> cache"],
        ),
        (  # the composition root importing from the HTTP layer, which imports it back
            {
                "parley/app.py": "from parley.http.metrics import Metrics",
                "parley/http/api.py": "if True:\n    from parley.app import Parley",
            },
            ["app may not import http", "import cycle between app -> http -> app"],
        ),
        (  # relative imports resolve too
            {"parley/storage/memory.py": "from ..services import users"},
            ["storage may not import services"],
        ),
        (  # a shared leaf reaching up
            {"parley/settings.py": "import parley.app"},
            ["a shared leaf may import only the lowest layers"],
        ),
        (  # downward and shared imports are fine
            {
                "parley/http/api.py": "from parley.services.users import UserService",
                "parley/services/users.py": "from parley import metrics, settings",
            },
            [],
        ),
    ],
)
def test_the_check_catches_upward_imports_and_cycles(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    found: dict[str, Path] = {}
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        found[name.removesuffix(".py").replace("/", ".")] = path
    for name in ("parley.metrics", "parley.settings", "parley.services.users"):
        found.setdefault(name, tmp_path / "empty.py")
    (tmp_path / "empty.py").write_text("")
    problems = violations(found, tmp_path)
    assert len(problems) == len(expected), problems
    for problem, wanted in zip(problems, expected, strict=True):
        assert wanted in problem
