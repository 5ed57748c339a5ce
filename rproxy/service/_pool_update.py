"""Making a live L{Pool} match a new L{PoolConfig} on reload, keeping the
health and counters of the backends that stay; and the two conversions a
new pool and a reload share: a backend's and the pool's L{PoolPolicy}."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

from rproxy.backends import Backend, Pool
from rproxy.balancing import make_balancer
from rproxy.config import BackendConfig, PoolConfig
from rproxy.policy import HashKey, PoolPolicy

__all__ = ["TLSFor", "new_backend", "pool_policy", "update_pool"]

#: the client TLS connection creator for a backend at a host, as
#: L{rproxy.service.client_tls} makes; None for plain TCP backends.
TLSFor = Callable[[str], IOpenSSLClientConnectionCreator] | None


def new_backend(config: BackendConfig, tls_for: TLSFor) -> Backend:
    """
    A backend as C{config} describes it, with no history.
    """
    return Backend(
        config.host,
        config.port,
        name=config.name,
        weight=config.weight,
        max_connections=config.max_connections,
        backup=config.backup,
        tls=None if tls_for is None else tls_for(config.host),
    )


def pool_policy(config: PoolConfig) -> PoolPolicy:
    """
    The policy of the pool C{config} describes: its timeouts (the file's
    C{[timeouts]} with the pool's own C{timeouts} over them, as
    C{config.timeouts} holds), tries, keep-alive limits, PROXY header, hash
    key, panic threshold, and what protects the backends (queue, slow start,
    retry budget, outlier ejection).
    """
    return PoolPolicy(
        connect_timeout=config.timeouts.connect,
        response_timeout=config.timeouts.response,
        idle_timeout=config.timeouts.idle,
        connect_tries=config.connect_tries,
        keep_alive_max_idle=config.keep_alive.max_idle,
        keep_alive_timeout=config.keep_alive.idle_timeout,
        send_proxy=config.send_proxy,
        hash_key=HashKey.parse(config.hash_key),
        panic_threshold=config.panic_threshold,
        queue_max=config.queue_max,
        queue_timeout=config.queue_timeout,
        slow_start=config.slow_start,
        retry_budget=config.retry_budget,
        min_retries=config.min_retries,
        outlier=config.outlier,
    )


def update_pool(
    pool: Pool,
    old: PoolConfig,
    new: PoolConfig,
    tls_for: TLSFor,
) -> list[Backend]:
    """
    Change C{pool}, built from C{old}, into what C{new} describes.

    Backends are matched by name.  One whose address is the same keeps its
    object, so its health, admin state and counters survive; only the
    settings that differ between C{old} and C{new} are applied, so a weight
    an operator set at run time stays unless the file changed it too.  A
    backend whose address changed is a new backend.  A new backend of a
    pool with active checks is down ("not checked yet") until C{rise}
    checks pass.  The pool's policy is replaced whole; what is under way
    keeps the policy it began with.  Open connections are never touched:
    they end on the backend object they began with.

    @param tls_for: the TLS settings of C{new}'s backends.
    @return: the backends whose idle connections must not be reused: those
        removed or replaced, and all of them when the pool's TLS settings
        changed.
    """
    stale: list[Backend] = []
    if new.balance != old.balance:
        pool.balancer = make_balancer(new.balance)
        pool.version += 1
    pool.rise = new.health.rise
    pool.fall = new.health.fall
    pool.policy = pool_policy(new)

    before = {b.name: b for b in old.backends}
    after = {b.name: b for b in new.backends}
    for name in before.keys() - after.keys():
        if _member(pool, name) is not None:
            stale.append(pool.remove(name))
    tls_changed = new.tls != old.tls
    for config in new.backends:
        was = before.get(config.name)
        live = _member(pool, config.name)
        if (
            live is None
            or was is None
            or (was.host, was.port)
            != (
                config.host,
                config.port,
            )
        ):
            if live is not None:
                stale.append(pool.remove(config.name))
            pool.add(_unchecked(new_backend(config, tls_for), new))
            continue
        # The files were read again (a renewed client certificate, a new
        # CA); idle connections are dropped only if the settings changed.
        live.tls = None if tls_for is None else tls_for(config.host)
        if tls_changed:
            stale.append(live)
        if config.weight != was.weight:
            pool.set_weight(live, config.weight)
        if (config.max_connections, config.backup) != (
            was.max_connections,
            was.backup,
        ):
            live.max_connections = config.max_connections
            live.backup = config.backup
            pool.version += 1
            pool.queue.kick()  # it may have room now
    return stale


def _unchecked(backend: Backend, config: PoolConfig) -> Backend:
    """
    A backend a reload adds to a running pool: with active checks it takes
    no traffic until C{rise} of them pass; without, it is up at once.
    """
    if config.health.check != "none":
        backend.healthy = False
        backend.reason = "not checked yet"
    return backend


def _member(pool: Pool, name: str) -> Backend | None:
    try:
        return pool.get(name)
    except KeyError:
        return None
