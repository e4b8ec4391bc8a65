"""Pulumi entry point: read the stack's config, build Parley's resources, export outputs."""

import sys
from pathlib import Path

import pulumi

sys.path.insert(0, str(Path(__file__).resolve().parent))

from parley_infra.config import load_config
from parley_infra.stack import build_stack

stack = build_stack(load_config())
for key, value in stack.exports().items():
    pulumi.export(key, value)
