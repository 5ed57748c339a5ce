"""The pool picture the supervisor pushes to its workers: every pool's
members with their address, weight, health and admin state, encoded as
JSON-ready data, and how a worker applies one to its own registry.

The supervisor owns the pools' membership, active health and admin state
(it runs the health checks, the admin controls and, with discovery, the
resolvers); each worker owns its traffic: its connections, counters,
passive health and outlier ejection.  L{apply_pools} therefore makes a
worker's pools match the picture while keeping what the worker judges
itself:

  - members missing from the worker are added, members the supervisor no
    longer has are removed (their open connections finish), weights follow;
  - a backend the supervisor's checks hold down is down in the worker; one
    the worker took down itself (passive health) comes back once a check
    in the supervisor passed after that;
  - drain and disable become a drain in the worker (open requests finish,
    then it is disabled); enable enables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from attrs import frozen
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

from rproxy.backends import AdminState, Backend, Pool, Registry

__all__ = [
    "Applied",
    "BackendPicture",
    "PoolPicture",
    "apply_pools",
    "decode_pools",
    "encode_pools",
]

#: a pool's backends' client TLS for a host, or None for plain TCP.
TLSForPool = Callable[[str], Callable[[str], IOpenSSLClientConnectionCreator] | None]


@frozen
class BackendPicture:
    """
    One backend as the supervisor sees it.
    """

    name: str
    host: str
    port: int
    weight: int = 1
    backup: bool = False
    max_connections: int | None = None
    healthy: bool = True
    admin: AdminState = AdminState.ENABLED
    reason: str = ""
    #: when the supervisor's last active check ran and whether it passed.
    last_check_at: float | None = None
    last_check_ok: bool | None = None

    @classmethod
    def of(cls, backend: Backend) -> BackendPicture:
        """
        The picture of a live backend.
        """
        return cls(
            name=backend.name,
            host=backend.host,
            port=backend.port,
            weight=backend.weight,
            backup=backend.backup,
            max_connections=backend.max_connections,
            healthy=backend.healthy,
            admin=backend.admin,
            reason=backend.reason,
            last_check_at=backend.last_check_at,
            last_check_ok=backend.last_check_ok,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "weight": self.weight,
            "backup": self.backup,
            "max_connections": self.max_connections,
            "healthy": self.healthy,
            "admin": self.admin.value,
            "reason": self.reason,
            "last_check_at": self.last_check_at,
            "last_check_ok": self.last_check_ok,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BackendPicture:
        """
        @raise ValueError: if C{data} is not a backend's picture.
        """
        try:
            return cls(
                name=str(data["name"]),
                host=str(data["host"]),
                port=int(data["port"]),
                weight=int(data.get("weight", 1)),
                backup=bool(data.get("backup", False)),
                max_connections=_optional(int, data.get("max_connections")),
                healthy=bool(data.get("healthy", True)),
                admin=AdminState(data.get("admin", "enabled")),
                reason=str(data.get("reason", "")),
                last_check_at=_optional(float, data.get("last_check_at")),
                last_check_ok=_optional(bool, data.get("last_check_ok")),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a backend picture: {error}") from None


def _optional(convert: Callable[[Any], Any], value: object) -> Any:
    return None if value is None else convert(value)


@frozen
class PoolPicture:
    """
    One pool's members, in order.
    """

    name: str
    backends: tuple[BackendPicture, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "backends": [b.to_json() for b in self.backends]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PoolPicture:
        """
        @raise ValueError: if C{data} is not a pool's picture.
        """
        try:
            backends = [BackendPicture.from_json(b) for b in data["backends"]]
            return cls(str(data["name"]), tuple(backends))
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a pool picture: {error}") from None


def encode_pools(registry: Iterable[Pool]) -> list[dict[str, Any]]:
    """
    Every pool of C{registry}, as JSON-ready data.
    """
    return [
        PoolPicture(
            pool.name, tuple(BackendPicture.of(b) for b in pool.backends)
        ).to_json()
        for pool in registry
    ]


def decode_pools(data: object) -> list[PoolPicture]:
    """
    The inverse of L{encode_pools}.

    @raise ValueError: if C{data} is not a list of pool pictures.
    """
    if not isinstance(data, list):
        raise ValueError("the pools must be a list")
    return [PoolPicture.from_json(pool) for pool in data]


@frozen
class Applied:
    """
    What L{apply_pools} changed that the caller must follow up: the pools
    whose membership changed (their health monitors must L{sync}) and the
    backends removed (their idle connections must be forgotten).
    """

    resized: tuple[str, ...] = ()
    removed: tuple[Backend, ...] = ()


def apply_pools(
    registry: Registry, pictures: Iterable[PoolPicture], tls_for: TLSForPool
) -> Applied:
    """
    Make the pools of C{registry} match C{pictures} (see the module
    docstring); pools the registry does not have are skipped.

    @param tls_for: the client TLS of a pool's backends (by pool name), for
        the backends added.
    """
    resized: list[str] = []
    removed: list[Backend] = []
    for picture in pictures:
        if picture.name not in registry:
            continue
        pool = registry.get(picture.name)
        wanted = {b.name: b for b in picture.backends}
        changed = False
        for backend in pool.backends:
            if backend.name not in wanted:
                removed.append(pool.remove(backend.name))
                changed = True
        members = {b.name for b in pool.backends}
        for seen in picture.backends:
            if seen.name not in members:
                pool.add(_new_backend(seen, tls_for(pool.name)))
                changed = True
            _follow(pool, pool.get(seen.name), seen)
        if changed:
            resized.append(pool.name)
    return Applied(tuple(resized), tuple(removed))


def _new_backend(
    seen: BackendPicture,
    tls: Callable[[str], IOpenSSLClientConnectionCreator] | None,
) -> Backend:
    return Backend(
        seen.host,
        seen.port,
        name=seen.name,
        weight=seen.weight,
        max_connections=seen.max_connections,
        backup=seen.backup,
        tls=None if tls is None else tls(seen.host),
        healthy=seen.healthy,
        admin=AdminState.ENABLED
        if seen.admin is AdminState.ENABLED
        else (AdminState.DISABLED),
        reason=seen.reason or "added by the supervisor",
    )


def _follow(pool: Pool, backend: Backend, seen: BackendPicture) -> None:
    """
    Bring one live backend of a worker in line with the supervisor's view.
    """
    if backend.weight != seen.weight:
        pool.set_weight(backend, seen.weight)
    backend.max_connections = seen.max_connections
    if seen.admin is AdminState.ENABLED:
        if backend.admin is not AdminState.ENABLED:
            pool.set_admin(backend, AdminState.ENABLED, seen.reason or "enabled")
    elif backend.admin is AdminState.ENABLED:
        pool.set_admin(backend, AdminState.DRAINING, seen.reason or "drained")
    if not seen.healthy:
        if backend.healthy:
            pool.mark_down(backend, f"health checks: {seen.reason}")
        return
    if backend.healthy or not seen.last_check_ok or seen.last_check_at is None:
        return
    if seen.last_check_at >= backend.changed_at:
        pool.mark_up(backend, "health check passed")
