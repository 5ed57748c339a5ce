"""The C{outlier} key of a pool: when backends answering 5xx are ejected
(L{rproxy.policy.OutlierPolicy}, which is also its model)."""

from __future__ import annotations

from rproxy.config._validate import (
    Table,
    fraction,
    model_keys,
    non_negative_int,
    positive_int,
    positive_number,
)
from rproxy.policy import OutlierPolicy

__all__ = ["parse_outlier"]

_KEYS = model_keys(OutlierPolicy)


def parse_outlier(pool: Table) -> OutlierPolicy | None:
    """
    The pool's C{outlier} table (C{true}: the defaults; C{false} or missing:
    no ejection), problems reported to C{pool}.
    """
    value = pool.data.get("outlier", False)
    if value is False:
        return None
    default = OutlierPolicy()
    if value is True:
        return default
    table = pool.table("outlier", _KEYS)
    if table is None:
        return None
    longest = table.get("max_ejection_time", positive_number, default.max_ejection_time)
    return OutlierPolicy(
        consecutive_5xx=table.get(
            "consecutive_5xx", non_negative_int, default.consecutive_5xx
        ),
        rate_5xx=table.get("rate_5xx", fraction, None),
        min_requests=table.get("min_requests", positive_int, default.min_requests),
        interval=table.get("interval", positive_number, default.interval),
        base_ejection=table.get(
            "base_ejection", positive_number, default.base_ejection
        ),
        max_ejection_time=longest,
        max_ejection=table.get("max_ejection", fraction, default.max_ejection),
    )
