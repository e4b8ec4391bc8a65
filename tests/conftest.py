"""What every test folder shares: how a test that needs a missing service gives up.

Nothing here may import a backend's library (asyncpg, redis, aiobotocore, moto): the unit
tests run with only the base and test dependencies installed. The storage backends and the
in-process app harness live in ``tests/backends.py``, which only the integration and
end-to-end folders load (from their own ``conftest.py``).
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip a test that needs a missing service, or fail under CI where it must run."""
    if IN_CI:
        pytest.fail(f"required service unavailable in CI: {reason}")
    pytest.skip(reason)
