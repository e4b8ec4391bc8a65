"""Error codes are one enumeration: every code the server can send is listed, documented in the
API document, and used somewhere (no code that nothing raises)."""

from __future__ import annotations

import re
from pathlib import Path

from parley.errors import Code
from parley.http.openapi import document

SRC = Path(__file__).resolve().parents[2] / "src" / "parley"


def _sources() -> str:
    return "\n".join(path.read_text() for path in SRC.rglob("*.py") if path != SRC / "errors.py")


def test_every_code_is_used_somewhere() -> None:
    used = set(re.findall(r"Code\.([A-Z_]+)", _sources()))
    defaults = set(re.findall(r"code = Code\.([A-Z_]+)", (SRC / "errors.py").read_text()))
    unused = {c.name for c in Code} - used - defaults
    assert not unused, f"codes nothing raises: {sorted(unused)}"


def test_no_error_code_is_a_bare_string() -> None:
    # A code written as a string literal next to an error would escape the enumeration.
    kinds = "InvalidInput|Unauthenticated|Forbidden|NotFound|Conflict|RateLimited|Unavailable"
    bare = re.findall(rf"(?:{kinds})\([^()]*,\s*f?\"[a-z_{{}}]+\"\s*\)", _sources())
    assert not bare


def test_the_document_lists_every_code() -> None:
    for token_mode in (True, False):
        schemas = document(token_mode)["components"]["schemas"]
        code = schemas["ErrorDetail"]["properties"]["code"]
        assert code == {"$ref": "#/components/schemas/Code"}
        assert set(schemas["Code"]["enum"]) == {c.value for c in Code}
