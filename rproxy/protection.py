"""The arithmetic of protecting backends, as plain functions: how far a slow
start has ramped, whether the retry budget allows one more retry, how many
backends of a pool may be ejected, and how long an ejection lasts.

The pool (L{rproxy.backends.Pool}), the balancers (L{rproxy.balancing}) and
the ejection detector (L{rproxy.outlier}) call these; nothing here keeps
state, reads a clock or does I/O.
"""

from __future__ import annotations

import math

__all__ = [
    "RAMP_FLOOR",
    "ejection_steps",
    "ejection_time",
    "may_eject",
    "ramp_share",
    "retries_allowed",
]

#: the share of its weight a backend has when its slow start begins: not 0,
#: so a pool whose only backend just came back still has one to send to,
#: and least-connections' arithmetic never divides by zero.
RAMP_FLOOR = 0.01


def ramp_share(elapsed: float, slow_start: float) -> float:
    """
    The share of its weight a backend has C{elapsed} seconds into a slow
    start of C{slow_start} seconds: from L{RAMP_FLOOR} up to 1, linearly;
    1 once the ramp is over (or with no slow start).
    """
    if slow_start <= 0.0 or elapsed >= slow_start:
        return 1.0
    return max(elapsed / slow_start, RAMP_FLOOR)


def retries_allowed(in_flight: int, budget: float | None, minimum: int) -> int | None:
    """
    How many retries may be under way at once in a pool with C{in_flight}
    requests (Envoy's retry budget): C{budget} of them, rounded down, but
    never fewer than C{minimum}; C{None} (no limit) without a budget.
    """
    if budget is None:
        return None
    return max(math.floor(budget * in_flight), minimum)


def may_eject(ejected: int, members: int, share: float) -> bool:
    """
    Whether one more backend of a pool of C{members} may be ejected while
    C{ejected} are: at most C{share} of the members (rounded down) at once,
    and never the last one left.
    """
    after = ejected + 1
    return after < members and after <= math.floor(share * members)


def ejection_steps(steps: int, unejected_for: float, interval: float) -> int:
    """
    How many ejections in a row a backend's next one makes: C{steps} (its
    ejections in a row so far) less one for each whole C{interval} it has
    since gone unejected, plus this one.
    """
    decayed = steps - int(unejected_for // interval) if interval > 0 else 0
    return max(decayed, 0) + 1


def ejection_time(steps: int, base: float, longest: float) -> float:
    """
    How long the C{steps}-th ejection in a row lasts: C{steps} times
    C{base}, at most C{longest}.
    """
    return min(steps * base, longest)
