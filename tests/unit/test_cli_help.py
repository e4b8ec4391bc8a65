"""Every option of ``parley serve``, ``migrate`` and ``bench`` says what it does in
``--help``."""

from __future__ import annotations

import re

import pytest

from parley.cli import main


def options_in_help(text: str) -> dict[str, str]:
    """Each option of an argparse help text and its description ("" when it has none)."""
    options: dict[str, str] = {}
    current: str | None = None
    in_options = False
    for line in text.splitlines():
        if re.match(r"^\S.*:$", line):  # a section header: "options:", "positional ..."
            in_options = line.startswith("options")
            current = None
            continue
        if not in_options or not line.strip():
            continue
        entry = re.match(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$", line)
        if entry:
            # "-h, --help" or "--auth {token,none}": the last of the flag names
            current = re.findall(r"(?:^|, )(--?[\w-]+)", entry.group(1))[-1]
            options[current] = entry.group(2) or ""
        elif current is not None and line.startswith("    "):  # description on its own line
            options[current] = (options[current] + " " + line.strip()).strip()
    return options


def test_the_parser_of_help_texts_sees_a_missing_description() -> None:
    text = "usage: x\n\noptions:\n  -h, --help  show help\n  --plain X\n  --long-one {a,b}\n"
    text += "                 a description below\n"
    assert options_in_help(text) == {"--help": "show help", "--plain": "", "--long-one": (
        "a description below"
    )}  # fmt: skip


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["serve"], {"--host", "--port", "--workers", "--auth", "--allow-auth-change"}),
        (["migrate"], {"--data-dir", "--storage", "--database-url"}),
        (["bench"], {"--quick", "--users", "--scenarios", "--database-url", "--redis-url"}),
        (["bench", "latency"], {"--messages", "--idle-streams", "--storage", "--json"}),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_every_option_has_a_description(
    command: list[str], expected: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    options = options_in_help(capsys.readouterr().out)
    assert expected <= set(options)
    undescribed = sorted(name for name, description in options.items() if not description)
    assert undescribed == [], f"parley {' '.join(command)}: options without help"
