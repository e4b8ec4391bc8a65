"""Parley's table specs, imported from the application package.

The specs live in ``parley.storage.dynamodb_tables`` (stdlib only). When Parley is installed
in the environment that runs Pulumi, that module is used as is; otherwise it is loaded
straight from this checkout's ``src/`` without importing the rest of the application.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

_MODULE = "parley.storage.dynamodb_tables"
_SOURCE = Path(__file__).resolve().parents[2] / "src" / "parley" / "storage" / "dynamodb_tables.py"


def _load() -> ModuleType:
    try:
        return importlib.import_module(_MODULE)
    except ImportError:
        pass
    if not _SOURCE.is_file():
        raise ImportError(f"cannot find {_MODULE}: install Parley or run from its checkout")
    name = "parley_infra._dynamodb_tables"
    spec = importlib.util.spec_from_file_location(name, _SOURCE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_SOURCE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from parley.storage.dynamodb_tables import (
        TABLES,
        BillingMode,
        GlobalSecondaryIndex,
        TableSpec,
        table_name,
        table_names,
    )
else:
    _tables = _load()
    TABLES = _tables.TABLES
    BillingMode = _tables.BillingMode
    GlobalSecondaryIndex = _tables.GlobalSecondaryIndex
    TableSpec = _tables.TableSpec
    table_name = _tables.table_name
    table_names = _tables.table_names

__all__ = [
    "TABLES",
    "BillingMode",
    "GlobalSecondaryIndex",
    "TableSpec",
    "table_name",
    "table_names",
]
