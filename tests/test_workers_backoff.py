"""Tests for the restart back-off of a worker slot."""

from __future__ import annotations

from rproxy.workers._backoff import RestartBackoff


def test_a_crash_loop_doubles_the_delay_up_to_the_ceiling() -> None:
    """Quick deaths in a row wait 0.1, 0.2, 0.4... seconds, at most 30."""
    backoff = RestartBackoff()
    delays = [backoff.delay(ran=0.5) for _ in range(12)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == 30.0 and max(delays) == 30.0


def test_a_worker_that_ran_a_while_restarts_at_once_again() -> None:
    """A death after a stable run starts over from the first delay."""
    backoff = RestartBackoff(first=1.0, stable=10.0)
    for _ in range(5):
        backoff.delay(ran=1.0)
    assert backoff.delay(ran=60.0) == 1.0
    assert backoff.delay(ran=1.0) == 2.0
