"""The metrics registry every layer uses: light counters and gauges, cheap until someone scrapes them.

prometheus_client costs ~3.5 MB of resident memory to import (it pulls in
http.server, wsgiref and email), which is a tenth of an idle daemon. The
counters and gauges made here (``counter``, ``gauge``: the bus, supervisor,
store and sync ones) are therefore plain Python objects with
the same ``labels(...).inc()/.set()`` interface; prometheus_client is imported
when ``/metrics`` is first rendered, and a collector then exposes them beside
every metric registered with prometheus_client itself (the API's, and those of
features that import it anyway: sync, sensors, voice).

Metric objects are module-level so that tests creating many buses or
supervisors in one process never register a name twice; per-instance detail
goes into labels.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Child:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = float(value)


class LightMetric:
    """A labelled counter or gauge held in a dict; rendered by prometheus_client on demand."""

    def __init__(self, kind: str, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.kind = kind  # counter | gauge
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self._children: dict[tuple[str, ...], _Child] = {}
        self._lock = threading.Lock()
        _LIGHT.append(self)

    def labels(self, *values: str) -> _Child:
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, _Child())
        return child

    def value(self, *values: str) -> float | None:
        """The current value for these labels (None when never touched); for tests and status."""
        child = self._children.get(tuple(str(v) for v in values))
        return None if child is None else child.value

    def samples(self) -> list[tuple[tuple[str, ...], float]]:
        return [(k, c.value) for k, c in list(self._children.items())]


_LIGHT: list[LightMetric] = []


def counter(name: str, documentation: str, labelnames: list[str]) -> LightMetric:
    return LightMetric("counter", name, documentation, tuple(labelnames))


def gauge(name: str, documentation: str, labelnames: list[str]) -> LightMetric:
    return LightMetric("gauge", name, documentation, tuple(labelnames))


_registered = False
_register_lock = threading.Lock()


def _ensure_registered() -> Any:
    """Import prometheus_client and expose the light metrics through its default registry."""
    global _registered
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    with _register_lock:
        if not _registered:

            class LightCollector:
                def collect(self) -> Iterator[Any]:
                    for metric in list(_LIGHT):
                        family_cls = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
                        family = family_cls(metric.name, metric.documentation, labels=list(metric.labelnames))
                        for labels, value in metric.samples():
                            family.add_metric(list(labels), value)
                        yield family

            REGISTRY.register(LightCollector())
            _registered = True
    return REGISTRY


def render_metrics() -> bytes:
    """The Prometheus text exposition of every metric, light and prometheus_client alike."""
    from prometheus_client import generate_latest

    return generate_latest(_ensure_registered())


def observe_all(histogram: Any, values: list[float]) -> None:
    """``histogram.observe(v)`` for each value, each bucket stepped once for the lot.

    prometheus_client's ``observe()`` walks the bucket bounds and takes a lock per value (~1.5 us a
    message at the hub); a batch's latencies are counted per bucket here and added with one ``inc``
    each, through the histogram's own ``_upper_bounds``, ``_buckets`` and ``_sum`` (what ``observe``
    updates). Where a prometheus_client lacks them, ``observe()`` per value, as before.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    if not values:
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bound >= value: observe()'s bucket
    total.inc(sum(values))
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)
