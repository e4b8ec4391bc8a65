"""``parley cost``: a capacity and cost model built from measured figures.

- ``course_design``: the original course design's three scenarios redone from its own inputs,
  and its errors as data;
- ``measured``: the file of measured figures (format ``parley-bench/1``) and its loader;
- ``model``: pure computation from bench figures and prices to dollars a month per shape;
- ``prices``: editable price inputs with their provenance;
- ``report`` / ``cli``: tables, JSON, chart; ``parley.cost.cli.main`` is the ``parley cost``
  subcommand.
"""

from parley.cost.course_design import SCENARIOS, checks, findings, recompute
from parley.cost.measured import BenchError, BenchFile, load_bench, parse_bench
from parley.cost.model import ModelInputs, ShapeCost, estimate
from parley.cost.prices import Prices

__all__ = [
    "SCENARIOS",
    "BenchError",
    "BenchFile",
    "ModelInputs",
    "Prices",
    "ShapeCost",
    "checks",
    "estimate",
    "findings",
    "load_bench",
    "parse_bench",
    "recompute",
]
