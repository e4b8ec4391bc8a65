"""The Dockerfile, checked as text (no Docker engine needed).

A small parser turns the file into stages of (instruction, arguments) and the tests check the
properties the image promises: slim multi-stage build, only the virtualenv in the final
stage, an unprivileged user, the health check and the command.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

EXPECTED_CMD = ["parley", "serve", "--host", "0.0.0.0", "--port", "8080"]
EXTRAS = ("redis", "postgres", "dynamodb")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def logical_lines(text: str) -> list[str]:
    """Join continuation lines and drop comments and blank lines."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages of a Dockerfile."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), parts[0]
            )
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            if keyword == "ARG" and "=" in rest:
                key, _, value = rest.partition("=")
                args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))[1]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_parser_handles_continuations_and_comments() -> None:
    _, parsed = parse(
        "ARG B=img:1\nFROM ${B} AS one\n# note\nRUN a \\\n    # inner\n    && b\nFROM one\nUSER x\n"
    )
    assert [(s.base, s.name) for s in parsed] == [("img:1", "one"), ("one", None)]
    assert parsed[0].instructions == [("RUN", "a && b")]
    assert parsed[1].last("USER") == "x"


def test_slim_python_multi_stage(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert stages[0].base == "python:3.11-slim"
    assert stages[-1].base == "python:3.11-slim"
    assert stages[0].name == "builder"


def test_builder_installs_parley_with_its_extras(stages: list[Stage]) -> None:
    runs = " ".join(stages[0].all("RUN"))
    assert "python -m venv /opt/parley" in runs
    assert "pip wheel" in runs
    match = re.search(r"\[([a-z,]+)\]", runs)
    assert match is not None
    assert set(match.group(1).split(",")) == set(EXTRAS)


def test_final_stage_copies_only_the_virtualenv(final: Stage) -> None:
    copies = final.all("COPY")
    assert copies == ["--from=builder /opt/parley /opt/parley"]
    assert not final.all("ADD")
    assert "/opt/parley/bin" in (final.last("ENV") or "")


def test_no_stage_copies_tests_or_the_whole_context(stages: list[Stage]) -> None:
    for stage in stages:
        for source in stage.all("COPY") + stage.all("ADD"):
            words = [w for w in shlex.split(source) if not w.startswith("--")]
            for path in words[:-1]:
                assert not path.startswith("tests"), source
                assert path not in {".", "./", "*"}, f"copies the whole build context: {source}"
                assert not path.startswith("http"), source


def test_final_user_is_not_root(final: Stage) -> None:
    user = final.last("USER")
    assert user is not None, "the final stage has no USER"
    name = user.split(":")[0]
    assert name not in {"root", "0"}
    # USER comes after every RUN, so nothing later runs as root.
    keywords = [key for key, _ in final.instructions]
    assert keywords.index("USER") > max(i for i, key in enumerate(keywords) if key == "RUN")


def test_exposes_8080(final: Stage) -> None:
    assert final.all("EXPOSE") == ["8080"]


def test_healthcheck_probes_healthz_without_curl(final: Stage) -> None:
    check = final.last("HEALTHCHECK")
    assert check is not None
    assert "/healthz" in check
    assert "urllib.request" in check
    assert "curl" not in check and "wget" not in check
    command = json.loads(check[check.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<healthcheck>", "exec")  # the probe is valid Python


def test_cmd_runs_parley_serve(final: Stage) -> None:
    cmd = final.last("CMD")
    assert cmd is not None
    assert json.loads(cmd) == EXPECTED_CMD  # exec form, so signals reach the server


def test_no_secrets_baked_in(stages: list[Stage]) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    for word in ("AWS_SECRET", "AWS_ACCESS_KEY", "PASSWORD", "TOKEN="):
        assert word not in text.upper()
    for stage in stages:
        for env in stage.all("ENV") + stage.all("ARG"):
            assert "SECRET" not in env.upper()


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    required = {
        ".git",
        ".venv",
        "tests",
        "**/__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "parley-data",
        "*.db",
        "*.sqlite3",
    }
    assert required <= patterns, required - patterns
    # What the builder copies must not be ignored.
    for needed in ("src", "pyproject.toml", "README.md"):
        assert needed not in patterns


def test_extras_exist_in_pyproject() -> None:
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"].get(
        "optional-dependencies", {}
    )
    missing = [extra for extra in EXTRAS if extra not in extras]
    if missing:
        pytest.skip(f"pyproject.toml does not define the extras {missing} yet")
    assert all(extra in extras for extra in EXTRAS)
