"""The admin interface and the caches: counters and sizes in /status.json
and /metrics, and POST /caches/NAME/purge by URL or prefix."""

from __future__ import annotations

from rproxy.admin import AdminService
from rproxy.cache.entry import StoredResponse
from rproxy.cache.memory import MemoryStore
from rproxy.cache.settings import CacheSettings
from rproxy.cache.shared import Cache
from rproxy.cache.store import TieredStore
from rproxy.config._admin import AdminConfig
from tests.test_admin import _AdminCase


def stored(key: bytes, body: bytes = b"hello") -> StoredResponse:
    return StoredResponse(
        key,
        (),
        (),
        200,
        b"OK",
        [(b"Cache-Control", b"max-age=60")],
        1000.0,
        1000.0,
        len(body),
        body,
    )


class CacheAdminTests(_AdminCase):
    token = "secret"

    def setUp(self) -> None:
        super().setUp()
        store = TieredStore(MemoryStore(1 << 20), None, 1 << 16)
        self.cache = Cache("static", CacheSettings(), store, self.reactor)
        for key in (
            b"http://a.example/x",
            b"http://a.example/y",
            b"http://b.example/x",
        ):
            store.put(stored(key))
        self.cache.counters["hit"] = 7
        self.cache.counters["miss"] = 2
        self.admin = AdminService(
            AdminConfig("tcp:9901:interface=127.0.0.1", None, self.token),
            self.registry,
            self.listeners,
            self.reactor,
            self.reload,
            caches={"static": self.cache},
        )

    def post(self, path: str) -> tuple[int, object]:
        response = self.request("POST", path, {"Authorization": "Bearer secret"})
        return response.status, response.json()

    def test_status_json_lists_each_cache(self) -> None:
        """/status.json has each cache's counters and what it holds."""
        (cache,) = self.request("GET", "/status.json").json()["caches"]
        assert cache["name"] == "static"
        assert (cache["hit"], cache["miss"], cache["stale"]) == (7, 2, 0)
        assert cache["memory_objects"] == 3
        assert cache["memory_bytes"] > 15
        assert (cache["disk_objects"], cache["disk_bytes"]) == (0, 0)

    def test_metrics_have_cache_events_and_sizes(self) -> None:
        """/metrics has events per cache and event, bytes and objects per
        tier."""
        text = self.request("GET", "/metrics").body.decode()
        assert 'rproxy_cache_events_total{cache="static",event="hit"} 7.0' in text
        assert 'rproxy_cache_events_total{cache="static",event="miss"} 2.0' in text
        assert 'rproxy_cache_objects{cache="static",tier="memory"} 3.0' in text
        assert 'rproxy_cache_objects{cache="static",tier="disk"} 0.0' in text

    def test_purge_one_url(self) -> None:
        """A purge by URL drops that response (the host's case aside) and
        counts it."""
        assert self.post("/caches/static/purge?url=http://A.example/x") == (
            200,
            {"cache": "static", "purged": 1},
        )
        assert self.cache.store.variants(b"http://a.example/x") == []
        assert self.cache.counters["purged"] == 1

    def test_purge_a_prefix(self) -> None:
        """A purge by prefix drops every response under it."""
        status, answer = self.post("/caches/static/purge?prefix=http://a.example/")
        assert (status, answer) == (200, {"cache": "static", "purged": 2})
        assert len(self.cache.store.variants(b"http://b.example/x")) == 1

    def test_purge_mistakes(self) -> None:
        """An unknown cache is 404; no URL, both, or a relative one is 400."""
        assert self.post("/caches/nope/purge?url=http://a.example/x")[0] == 404
        assert self.post("/caches/static/purge")[0] == 400
        assert (
            self.post("/caches/static/purge?url=http://a/&prefix=http://a/")[0] == 400
        )
        assert self.post("/caches/static/purge?url=/x")[0] == 400

    def test_purge_needs_the_token(self) -> None:
        """Purging is a control: without the token it is 401."""
        response = self.request("POST", "/caches/static/purge?url=http://a.example/x")
        assert response.status == 401
        assert len(self.cache.store.variants(b"http://a.example/x")) == 1

    def test_purge_refuses_get(self) -> None:
        """GET on the purge endpoint is 405."""
        assert (
            self.request("GET", "/caches/static/purge?url=http://a.example/x").status
            == 405
        )
