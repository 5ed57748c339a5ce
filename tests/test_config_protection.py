"""The pool keys that protect backends: queue_max, queue_timeout,
slow_start, retry_budget, min_retries and outlier, from the file to the
pool's policy, across a reload."""

from __future__ import annotations

import tomllib

import pytest
from twisted.internet.task import Clock

from rproxy.config import ConfigError, PoolConfig, parse_config
from rproxy.outlier import OutlierDetector
from rproxy.policy import OutlierPolicy, PoolPolicy
from rproxy.service import build_pool
from rproxy.service._pool_update import pool_policy, update_pool

LISTENER = """
[[listeners]]
name = "l"
protocol = "http"
listen = "tcp:0"
pool = "p"
"""


def pool_config(body: str) -> PoolConfig:
    text = f'[pools.p]\nbackends = ["127.0.0.1:8001"]\n{body}\n{LISTENER}'
    return parse_config(tomllib.loads(text), "c.toml").pool("p")


def errors(body: str) -> list[str]:
    text = f'[pools.p]\nbackends = ["127.0.0.1:8001"]\n{body}\n{LISTENER}'
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text), "c.toml")
    return info.value.errors


def test_defaults_queue_but_do_not_ramp_budget_or_eject() -> None:
    """Unless told, a pool queues up to 128 for 5 s, and has no slow start,
    no retry budget and no ejection."""
    policy = pool_policy(pool_config(""))
    assert (policy.queue_max, policy.queue_timeout) == (128, 5.0)
    assert (policy.slow_start, policy.retry_budget, policy.outlier) == (0.0, None, None)
    assert policy.min_retries == 3
    assert policy == PoolPolicy()


def test_keys_reach_the_pool_policy() -> None:
    """Every key ends up in the policy the pool's traffic reads."""
    config = pool_config(
        """
queue_max = 10
queue_timeout = 1.5
slow_start = 30
retry_budget = 0.2
min_retries = 5
outlier = { consecutive_5xx = 4, interval = 5, base_ejection = 20, max_ejection = 0.3 }
"""
    )
    policy = pool_policy(config)
    assert (policy.queue_max, policy.queue_timeout, policy.slow_start) == (
        10,
        1.5,
        30.0,
    )
    assert (policy.retry_budget, policy.min_retries) == (0.2, 5)
    assert policy.outlier == OutlierPolicy(
        consecutive_5xx=4, interval=5.0, base_ejection=20.0, max_ejection=0.3
    )


def test_outlier_as_a_table_true_or_false() -> None:
    """outlier = true takes the defaults, false none; a [pools.p.outlier]
    table with rate_5xx is read like the inline one."""
    assert pool_config("outlier = true").outlier == OutlierPolicy()
    assert pool_config("outlier = false").outlier is None
    config = pool_config("[pools.p.outlier]\nrate_5xx = 0.5\nmin_requests = 50\n")
    assert config.outlier == OutlierPolicy(rate_5xx=0.5, min_requests=50)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            "queue_max = -1",
            "c.toml: pools.p.queue_max: must be an integer >= 0, got -1",
        ),
        (
            "queue_timeout = 0",
            "c.toml: pools.p.queue_timeout: must be a positive number",
        ),
        ("slow_start = -5", "c.toml: pools.p.slow_start: must be a number >= 0"),
        (
            "retry_budget = 20",
            "c.toml: pools.p.retry_budget: must be a fraction from 0 to 1, got 20; "
            "for 20% write 0.2",
        ),
        ("outlier = 3", "c.toml: pools.p.outlier: must be a table, got 3"),
        (
            "outlier = { consecutive = 5 }",
            "c.toml: pools.p.outlier.consecutive: unknown key",
        ),
        (
            "outlier = { max_ejection = 50 }",
            "c.toml: pools.p.outlier.max_ejection: must be a fraction from 0 to 1",
        ),
        (
            "outlier = { interval = 0 }",
            "c.toml: pools.p.outlier.interval: must be a positive number",
        ),
    ],
)
def test_wrong_values_are_named_by_their_key_path(body: str, problem: str) -> None:
    """A wrong value is one problem naming the file and the key path."""
    found = errors(body)
    assert len(found) == 1 and found[0].startswith(problem), found


def test_reload_replaces_the_policy_and_keeps_the_detector() -> None:
    """A reload changes the policy the queue, budget and ejection read; the
    pool keeps its detector (built with the pool) and its queue."""
    old = pool_config("")
    pool = build_pool(old, Clock())
    assert isinstance(pool.outlier, OutlierDetector)
    detector, queue = pool.outlier, pool.queue
    new = pool_config("queue_timeout = 2\nretry_budget = 0.25\noutlier = true")
    update_pool(pool, old, new, None)
    assert (pool.policy.queue_timeout, pool.policy.retry_budget) == (2.0, 0.25)
    assert pool.policy.outlier == OutlierPolicy()
    assert (pool.outlier, pool.queue) == (detector, queue)


def test_the_readme_example_reads_as_documented() -> None:
    """The README's Protecting backends example gives the policy it says."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Protecting backends", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    config = parse_config(
        tomllib.loads(example + LISTENER.replace('"p"', '"api"')), "README"
    )
    policy = pool_policy(config.pool("api"))
    assert (policy.queue_max, policy.queue_timeout, policy.slow_start) == (
        200,
        2.0,
        30.0,
    )
    assert (policy.retry_budget, policy.min_retries) == (0.2, 3)
    assert policy.outlier == OutlierPolicy(
        consecutive_5xx=5, interval=10.0, base_ejection=30.0, max_ejection=0.5
    )
    assert [b.max_connections for b in config.pool("api").backends] == [50, 50]
