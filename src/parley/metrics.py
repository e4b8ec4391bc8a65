"""Prometheus metrics, kept cheap on the hot path.

Each request costs one dict lookup, two integer increments and a bisect into a short list
of bucket bounds. Storage calls are counted by the storage adapter itself and read when
``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable

BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class RouteStats:
    __slots__ = ("buckets", "statuses", "total_seconds")

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.total_seconds = 0.0


class Metrics:
    def __init__(self) -> None:
        self.routes: dict[str, RouteStats] = {}
        self.sources: list[tuple[str, str, str, Callable[[], Iterable[tuple[str, float]]]]] = []

    def observe(self, route: str, status: int, seconds: float) -> None:
        stats = self.routes.get(route)
        if stats is None:
            stats = self.routes[route] = RouteStats()
        stats.statuses[status] += 1
        stats.buckets[bisect_left(BUCKETS, seconds)] += 1
        stats.total_seconds += seconds

    def add_source(
        self,
        name: str,
        help_text: str,
        kind: str,
        read: Callable[[], Iterable[tuple[str, float]]],
    ) -> None:
        """A metric read at scrape time: ``read`` yields (label text, value) pairs."""
        self.sources.append((name, help_text, kind, read))

    def render(self) -> str:
        out: list[str] = [
            "# HELP parley_http_requests_total HTTP requests by route and status.",
            "# TYPE parley_http_requests_total counter",
        ]
        for route, stats in sorted(self.routes.items()):
            for status, count in sorted(stats.statuses.items()):
                out.append(
                    f'parley_http_requests_total{{route="{route}",status="{status}"}} {count}'
                )
        out += [
            "# HELP parley_http_errors_total HTTP responses with status >= 400 by route.",
            "# TYPE parley_http_errors_total counter",
        ]
        for route, stats in sorted(self.routes.items()):
            errors = sum(c for s, c in stats.statuses.items() if s >= 400)
            out.append(f'parley_http_errors_total{{route="{route}"}} {errors}')
        out += [
            "# HELP parley_http_request_seconds Request latency by route.",
            "# TYPE parley_http_request_seconds histogram",
        ]
        for route, stats in sorted(self.routes.items()):
            running = 0
            for bound, count in zip((*BUCKETS, float("inf")), stats.buckets, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(
                    f'parley_http_request_seconds_bucket{{route="{route}",le="{le}"}} {running}'
                )
            out.append(f'parley_http_request_seconds_sum{{route="{route}"}} {stats.total_seconds}')
            out.append(f'parley_http_request_seconds_count{{route="{route}"}} {running}')
        for name, help_text, kind, read in self.sources:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for labels, value in read():
                out.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")
        return "\n".join(out) + "\n"
