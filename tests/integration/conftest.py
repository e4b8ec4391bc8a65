"""Storage backends and the in-process app harness for these tests (``tests/backends.py``)."""

from tests.backends import (  # noqa: F401  (fixtures, registered by being imported here)
    api,
    backend,
    clocked_storage,
    make_harness,
    open_api,
    storage,
)
