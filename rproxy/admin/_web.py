"""The admin interface's HTTP resource: the status page, JSON status and
metrics for reading, and the POST-only control endpoints.

=====================================================  =========================
C{GET /}                                                the status page (HTML)
C{GET /status.json}                                     the same, as JSON
C{GET /metrics}                                         Prometheus exposition
C{POST /pools/POOL/backends/BACKEND/drain}              no new traffic; disabled
                                                        once the last ends
C{POST /pools/POOL/backends/BACKEND/disable}            no new traffic
C{POST /pools/POOL/backends/BACKEND/enable}             back in rotation
C{POST /pools/POOL/backends/BACKEND/weight?value=N}     new weight (or form
                                                        field C{value=N})
C{POST /reload}                                         read the config again
C{POST /caches/CACHE/purge?url=URL} (or C{prefix=URL})  drop stored responses
=====================================================  =========================

Control endpoints need C{Authorization: Bearer TOKEN} when a token is
configured.  Without one, they refuse (403) what a browser sends for another
site: a C{Host} that is not an IP address or C{localhost} (DNS rebinding), an
C{Origin} other than the C{Host}, or a C{Sec-Fetch-Site} other than
C{same-origin} or C{none}.  Every answer but the page and the metrics is
JSON.  Once the admin service has stopped, every request is answered 503 and
its connection closed.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from rproxy.admin._page import render_page
from rproxy.admin._status import backend_status
from rproxy.backends import AdminState, Backend, Pool

if TYPE_CHECKING:
    from rproxy.admin import AdminService

__all__ = ["MAX_WEIGHT", "AdminResource"]

log = Logger(namespace="rproxy.admin")

#: the highest weight the weight endpoint sets (a hash ring holds points
#: per unit of weight: a typo must not make it huge).
MAX_WEIGHT = 1000

_READ = (b"GET", b"HEAD")
_ADMIN_STATES = {
    "drain": AdminState.DRAINING,
    "disable": AdminState.DISABLED,
    "enable": AdminState.ENABLED,
}
_ACTIONS = (*_ADMIN_STATES, "weight")


class _AnswerError(Exception):
    """
    Stop handling a request and answer C{status} with a JSON error.
    """

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _peer(request: Request) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", None) or address)


def _json(request: Request, status: int, body: object) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body, indent=2).encode("utf-8") + b"\n"


class AdminResource(Resource):
    """
    Serves every path of the admin interface of C{admin}, which it asks for
    the pools, listeners, token and reload at each request.
    """

    isLeaf = True

    def __init__(self, admin: AdminService) -> None:
        super().__init__()
        self._admin = admin

    def render(self, request: Request) -> bytes | int:
        request.setHeader(b"cache-control", b"no-store")
        if self._admin.stopped:
            request.channel.persistent = False
            request.setHeader(b"connection", b"close")
            return _json(request, 503, {"error": "the admin interface has stopped"})
        try:
            segments = [s.decode("utf-8") for s in request.postpath or [b""]]
        except UnicodeDecodeError:
            return _json(request, 404, {"error": "no such page"})
        try:
            if segments in ([""], ["status.json"], ["metrics"]):
                self._allow(request, _READ)
                return self._read(request, segments[0])
            if segments == ["reload"]:
                self._allow(request, (b"POST",))
                self._authorize(request)
                return self._reload(request)
            if (
                len(segments) == 3
                and segments[0] == "caches"
                and segments[2] == "purge"
            ):
                self._allow(request, (b"POST",))
                self._authorize(request)
                return self._purge(request, segments[1])
            if (
                len(segments) == 5
                and segments[0] == "pools"
                and segments[2] == "backends"
                and segments[4] in _ACTIONS
            ):
                self._allow(request, (b"POST",))
                self._authorize(request)
                return self._control(request, segments[1], segments[3], segments[4])
        except _AnswerError as answer:
            for name, value in answer.headers.items():
                request.setHeader(name, value)
            return _json(request, answer.status, {"error": answer.message})
        return _json(request, 404, {"error": "no such page"})

    # Checks -----------------------------------------------------------------

    def _allow(self, request: Request, methods: tuple[bytes, ...]) -> None:
        if request.method not in methods:
            raise _AnswerError(
                405,
                f"use {' or '.join(m.decode() for m in methods)}",
                {"Allow": ", ".join(m.decode() for m in methods)},
            )

    def _authorize(self, request: Request) -> None:
        token = self._admin.token
        if token is None:
            self._same_origin(request)
            return
        given = (request.getHeader(b"authorization") or b"").decode("latin-1")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode("utf-8"), token.encode("utf-8")
        ):
            return
        log.warn(
            "admin request {method} {path} from {peer} refused: {reason}",
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
            peer=_peer(request),
            reason="wrong token" if given else "no token",
        )
        raise _AnswerError(
            401,
            "send the admin token as 'Authorization: Bearer TOKEN'",
            {"WWW-Authenticate": 'Bearer realm="rproxy admin"'},
        )

    def _same_origin(self, request: Request) -> None:
        """
        Refuse a control request a browser sends on behalf of another site.
        """
        reason = _cross_site(request)
        if reason is None:
            return
        log.warn(
            "admin request {method} {path} from {peer} refused: {reason}",
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
            peer=_peer(request),
            reason=reason,
        )
        raise _AnswerError(403, f"cross-site request refused: {reason}")

    # Reading ----------------------------------------------------------------

    def _read(self, request: Request, page: str) -> bytes:
        admin = self._admin
        if page == "metrics":
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
            return admin.metrics_text()
        status = admin.status()
        if page == "status.json":
            return _json(request, 200, status)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return render_page(status)

    # Control ----------------------------------------------------------------

    def _find(self, pool_name: str, backend_name: str) -> tuple[Pool, Backend]:
        registry = self._admin.registry
        if pool_name not in registry:
            raise _AnswerError(404, f"no pool {pool_name!r}")
        pool = registry.get(pool_name)
        try:
            return pool, pool.get(backend_name)
        except KeyError:
            raise _AnswerError(
                404, f"pool {pool_name!r} has no backend {backend_name!r}"
            ) from None

    def _control(
        self, request: Request, pool_name: str, backend_name: str, action: str
    ) -> bytes:
        pool, backend = self._find(pool_name, backend_name)
        peer = _peer(request)
        if action == "weight":
            weight = _weight(request)
            pool.set_weight(backend, weight)
            log.info(
                "admin {peer}: weight of backend {backend} in pool {pool} set "
                "to {weight}",
                peer=peer,
                backend=backend.name,
                pool=pool.name,
                weight=weight,
            )
        else:
            log.info(
                "admin {peer}: {action} backend {backend} in pool {pool}",
                peer=peer,
                action=action,
                backend=backend.name,
                pool=pool.name,
            )
            pool.set_admin(backend, _ADMIN_STATES[action], f"{action} by admin")
        answer: dict[str, Any] = {"pool": pool.name}
        answer.update(backend_status(backend, self._admin.clock.seconds()))
        return _json(request, 200, answer)

    def _purge(self, request: Request, name: str) -> bytes | int:
        cache = self._admin.caches.get(name)
        if cache is None:
            raise _AnswerError(404, f"no cache {name!r}")
        args = request.args or {}
        urls, prefixes = args.get(b"url", []), args.get(b"prefix", [])
        if len(urls) + len(prefixes) != 1:
            raise _AnswerError(
                400, "give one url=URL or prefix=URL (an absolute http(s) URL)"
            )
        given = (urls or prefixes)[0].decode("latin-1")
        if not given.startswith(("http://", "https://")):
            raise _AnswerError(
                400, f"{'url' if urls else 'prefix'} must be an absolute http(s) URL"
            )
        purged = cache.purge(given) if urls else cache.purge_prefix(given)
        what = "url" if urls else "prefix"
        if isinstance(purged, Deferred):
            # With workers: the count comes back from each of them.
            purged.addCallbacks(
                lambda count: self._purged(request, name, what, given, count),
                lambda failure: self._purge_failed(request, name, failure),
            )
            return NOT_DONE_YET
        return self._purged(request, name, what, given, purged, finish=False)

    def _purged(
        self,
        request: Request,
        name: str,
        what: str,
        given: str,
        purged: int,
        finish: bool = True,
    ) -> bytes:
        log.info(
            "admin {peer}: cache {cache} purged {what} {given}: {purged} responses",
            peer=_peer(request),
            cache=name,
            what=what,
            given=given,
            purged=purged,
        )
        body = _json(request, 200, {"cache": name, "purged": purged})
        if finish and not request.finished and not request._disconnected:
            request.write(body)
            request.finish()
        return body

    def _purge_failed(self, request: Request, name: str, failure: Any) -> None:
        log.failure("admin: purging cache {cache} failed", failure, cache=name)
        if not request.finished and not request._disconnected:
            request.write(_json(request, 500, {"error": "purge failed; see the log"}))
            request.finish()

    def _reload(self, request: Request) -> bytes:
        log.info("admin {peer}: reload", peer=_peer(request))
        try:
            errors = list(self._admin.reload())
        except Exception:
            log.failure("admin reload failed")
            return _json(
                request,
                500,
                {"reloaded": False, "errors": ["reload failed; see the log"]},
            )
        if errors:
            return _json(request, 422, {"reloaded": False, "errors": errors})
        return _json(request, 200, {"reloaded": True})


def _cross_site(request: Request) -> str | None:
    """
    Why a browser may have sent C{request} for another site, or None.
    """
    host = request.getHeader(b"host")
    if host is not None and not _is_local_name(host.decode("latin-1")):
        return f"Host {host.decode('latin-1')!r} is not an IP address or localhost"
    origin = request.getHeader(b"origin")
    if origin is not None:
        text = origin.decode("latin-1")
        allowed = () if host is None else (b"http://" + host, b"https://" + host)
        if origin.lower() not in [a.lower() for a in allowed]:
            return f"Origin {text!r} is not this host"
    fetch_site = request.getHeader(b"sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in (b"same-origin", b"none"):
        return f"Sec-Fetch-Site is {fetch_site.decode('latin-1')!r}"
    return None


def _is_local_name(host: str) -> bool:
    """
    Whether a C{Host} header is an IP address or C{localhost}, with or
    without a port: names that DNS rebinding cannot point elsewhere.
    """
    if host.startswith("["):
        name, bracket, port = host[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return False
        port = port[1:]
    else:
        name, _, port = host.partition(":") if host.count(":") == 1 else (host, "", "")
    if port and not (port.isascii() and port.isdigit()):
        return False
    if name.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _weight(request: Request) -> int:
    """
    The C{value} argument (query string or form field) as a weight.
    """
    values = (request.args or {}).get(b"value", [])
    if len(values) != 1:
        raise _AnswerError(400, "give the new weight once, as value=N")
    text = values[0].decode("latin-1").strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_WEIGHT:
        raise _AnswerError(
            400, f"weight must be an integer from 1 to {MAX_WEIGHT}, got {text!r}"
        )
    return int(text)
