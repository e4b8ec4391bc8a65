"""Real server processes for end-to-end tests (the same helper the benchmark uses)."""

from parley.bench.procs import Server, free_port

__all__ = ["Server", "free_port"]
