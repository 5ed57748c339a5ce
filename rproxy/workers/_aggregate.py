"""The whole group's status and metrics: the supervisor's own (pools,
health, admin state, listeners' addresses) with every worker's counters
added, and each worker's counters on their own.

Status: in every listener, pool, backend and cache the supervisor lists,
each number a worker reports under the same names is added to the
supervisor's (which carries no traffic), except the L{KEPT} ones, which
describe state the supervisor owns or moments in time.  C{workers} lists
each worker with its own listeners' and backends' counters.

Metrics: the families of L{OWNED} (state: health, admin, weights, checks)
are the supervisor's; every other family is the sum of the workers' samples
with the same labels, and is repeated per worker as C{rproxy_worker_*}
with a C{worker} label (so C{sum()} over the plain families never counts a
worker twice).

A worker that ends leaves what it counted (L{Retired}: its counters, not
its gauges) in the sums, so that the group's counters never go back when
it is started again from zero.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

__all__ = [
    "GROWING",
    "KEPT",
    "MOMENTARY",
    "OWNED",
    "Retired",
    "add_counts",
    "group_metrics",
    "group_status",
    "render_metrics",
]

#: status fields that are not summed: the supervisor's value stays.
KEPT = frozenset(
    {
        "time",
        "weight",
        "effective_weight",
        "max_connections",
        "state_since",
        "state_age",
        "at",
        "age",
        "duration",
        "ejected_until",
    }
)

#: status fields of a moment, not counts: what a worker that ended had of
#: them is not carried in the group's sums.
MOMENTARY = frozenset(
    {
        "active",
        "waiting",
        "ejected",
        "fetching",
        "bytes",
        "objects",
        "memory_bytes",
        "memory_objects",
        "disk_bytes",
        "disk_objects",
        "connections_per_second",
        "requests_per_second",
    }
)

#: metric types whose values only grow: what a worker that ended had
#: counted stays in the group's sums, so that they never go back.
GROWING = frozenset({"counter", "histogram", "summary"})

#: metric families the supervisor's collector answers for the group.
OWNED = frozenset(
    {
        "rproxy_listener_info",
        "rproxy_pool_backends",
        "rproxy_backend_state",
        "rproxy_backend_healthy",
        "rproxy_backend_weight",
        "rproxy_backend_state_change_timestamp_seconds",
        "rproxy_backend_health_check_success",
        "rproxy_backend_health_check_timestamp_seconds",
        "rproxy_backend_health_check_duration_seconds",
    }
)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def add_counts(
    into: dict[str, Any], other: Mapping[str, Any], *, insert: bool = False
) -> None:
    """
    Add the numbers of C{other} to those of C{into} in place, key by key,
    into nested objects and into lists of objects matched by C{name}; keys
    of L{KEPT} are left alone, and so is anything C{into} does not have,
    unless C{insert}: then it is copied in.
    """
    for key, value in other.items():
        if key in KEPT:
            continue
        if key not in into:
            if insert:
                into[key] = copy.deepcopy(value)
            continue
        mine = into[key]
        if _number(value) and (_number(mine) or mine is None):
            into[key] = (mine or 0) + value
        elif isinstance(value, dict) and isinstance(mine, dict):
            add_counts(mine, value, insert=insert)
        elif isinstance(value, list) and isinstance(mine, list):
            named = {
                entry.get("name"): entry for entry in mine if isinstance(entry, dict)
            }
            for entry in value:
                if not isinstance(entry, dict):
                    continue
                if entry.get("name") in named:
                    add_counts(named[entry["name"]], entry, insert=insert)
                elif insert:
                    mine.append(copy.deepcopy(entry))


def _summary(status: Mapping[str, Any]) -> dict[str, Any]:
    """
    A worker's own counters, as its entry in C{workers} shows them.
    """
    return {
        "listeners": [
            {
                key: listener.get(key)
                for key in ("name", "active", "connections_total", "requests_total")
            }
            for listener in status.get("listeners", ())
        ],
        "pools": [
            {
                "name": pool.get("name"),
                "backends": [
                    {
                        key: backend.get(key)
                        for key in ("name", "state", "active", "requests_total")
                    }
                    for backend in pool.get("backends", ())
                ],
            }
            for pool in status.get("pools", ())
        ],
    }


def _counts_only(data: Any) -> Any:
    """
    C{data} (a status or part of one) with every momentary number zeroed.
    """
    if isinstance(data, dict):
        return {
            key: 0 if key in MOMENTARY and _number(value) else _counts_only(value)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [_counts_only(entry) for entry in data]
    return data


class Retired:
    """
    What the workers that ended had counted: added to the group's sums so
    that a restarted worker, starting again from zero, does not take the
    group's counters back.
    """

    def __init__(self) -> None:
        self.status: dict[str, Any] | None = None
        self.metrics: list[Metric] = []

    def add(self, status: Mapping[str, Any] | None, metrics: str) -> None:
        """
        Keep the counts of a worker that ended: its last status and metrics
        text (as it last reported them).
        """
        if status is not None:
            counts = _counts_only(dict(status))
            if self.status is None:
                self.status = counts
            else:
                add_counts(self.status, counts, insert=True)
        if metrics:
            growing = [
                family
                for family in text_string_to_metric_families(metrics)
                if family.type in GROWING
            ]
            self.metrics = _summed([self.metrics, growing])


def _summed(lists: Iterable[Iterable[Metric]]) -> list[Metric]:
    """
    The families of C{lists}, the samples of the same name and labels added.
    """
    first: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]] = {}
    for families in lists:
        for family in families:
            first.setdefault(family.name, family)
            _add(values.setdefault(family.name, {}), family.samples)
    out = []
    for name, family in first.items():
        total = Metric(name, family.documentation, family.type, family.unit)
        total.samples = list(values[name].values())
        out.append(total)
    return out


def _add(
    into: dict[tuple[str, tuple[tuple[str, str], ...]], Sample],
    samples: Iterable[Sample],
) -> None:
    for sample in samples:
        before = into.get(_key(sample))
        value = sample.value + (0.0 if before is None else before.value)
        into[_key(sample)] = sample._replace(value=value)


def group_status(
    own: dict[str, Any],
    workers: Iterable[tuple[Mapping[str, Any], Mapping[str, Any] | None]],
    retired: Retired | None = None,
) -> dict[str, Any]:
    """
    C{own} (the supervisor's status, changed in place and returned) with
    each worker's counters added and C{workers} listing them.

    @param workers: each worker's description (C{worker}, C{pid},
        C{state}, C{restarts}...) and its last status (None before its
        first report).
    @param retired: what workers that ended had counted.
    """
    if retired is not None and retired.status is not None:
        add_counts(own, retired.status)
    listed = []
    for about, status in workers:
        entry = dict(about)
        if status is not None:
            add_counts(own, status)
            entry.update(_summary(status))
        listed.append(entry)
    own["workers"] = listed
    return own


def _key(sample: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return sample.name, tuple(sorted(sample.labels.items()))


def _per_worker(name: str) -> str:
    return "rproxy_worker_" + name.removeprefix("rproxy_")


def group_metrics(
    own: Iterable[Metric],
    workers: Mapping[int, Iterable[Metric]],
    retired: Iterable[Metric] = (),
) -> list[Metric]:
    """
    The group's metric families: see the module docstring.

    @param own: the supervisor's families.
    @param workers: each worker's families, by worker number.
    @param retired: the counts of workers that ended (L{Retired.metrics}),
        in the sums only.
    """
    summed: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]] = {}
    for family in own:
        summed[family.name] = family
        values[family.name] = {_key(s): s for s in family.samples}
    per_worker: dict[str, Metric] = {}
    for index, families in sorted(workers.items()):
        for family in families:
            if family.name in OWNED:
                continue
            if family.name not in summed:
                summed[family.name] = family
                values[family.name] = {}
            _add(values[family.name], family.samples)
            name = _per_worker(family.name)
            if name not in per_worker:
                per_worker[name] = Metric(
                    name, f"{family.documentation} (one worker)", family.type
                )
            per_worker[name].samples.extend(
                s._replace(
                    name=_per_worker(s.name),
                    labels={**s.labels, "worker": str(index)},
                )
                for s in family.samples
            )
    for family in retired:
        # Only into series that still exist: not those of a backend or
        # listener gone since.
        known = values.get(family.name)
        if known is not None and family.name not in OWNED:
            _add(known, [s for s in family.samples if _key(s) in known])
    out = []
    for name, family in summed.items():
        group = Metric(name, family.documentation, family.type, family.unit)
        group.samples = list(values[name].values())
        out.append(group)
    return out + list(per_worker.values())


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def render_metrics(
    own: CollectorRegistry,
    workers: Mapping[int, str],
    retired: Iterable[Metric] = (),
) -> bytes:
    """
    The Prometheus text of the group: C{own} is the supervisor's registry,
    C{workers} each worker's last metrics text (empty before its first
    report), by worker number, C{retired} what ended workers counted.
    """
    families = group_metrics(
        own.collect(),
        {
            index: list(text_string_to_metric_families(text))
            for index, text in workers.items()
            if text
        },
        retired,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry)
