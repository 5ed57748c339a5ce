"""Tests for a worker's proxy (not started): what it leaves to the
supervisor, and how it takes the supervisor's pushes."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import trustme
from twisted.internet.testing import MemoryReactorClock

from rproxy.backends import Backend, BackendState, Pool, Registry
from rproxy.config import parse_config
from rproxy.health import HealthMonitor
from rproxy.tls import ServerCertificate
from rproxy.workers._control import ControlProtocol
from rproxy.workers._ports import Adopted
from rproxy.workers._snapshot import encode_pools
from rproxy.workers._worker import (
    WorkerControl,
    WorkerProxy,
    certificate_to_json,
)

CONFIG = """
workers = 2

[pools.checked]
backends = ["127.0.0.1:8001"]
health = {{ check = "http", interval = 1 }}

[pools.passive]
backends = ["127.0.0.1:8002"]
health = {{ check = "none" }}

[[listeners]]
name = "web"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "checked"

[listeners.tls]
certificates = [{{ cert = "{cert}", key = "{key}" }}]
redirect_http_from = "tcp:0:interface=127.0.0.1"

[admin]
listen = "tcp:0:interface=127.0.0.1"

[acme]
directory = "https://acme.invalid/directory"
email = "a@example.com"
domains = ["a.example.com"]
storage = "{storage}"
"""


def worker(tmp_path: Path) -> WorkerProxy:
    ca = trustme.CA()
    leaf = ca.issue_cert("web.example.com")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    text = CONFIG.format(
        cert=tmp_path / "cert.pem", key=tmp_path / "key.pem", storage=tmp_path / "acme"
    )
    config = parse_config(tomllib.loads(text), str(tmp_path / "rproxy.toml"))
    reactor = MemoryReactorClock()
    return WorkerProxy(config, reactor, 1, Adopted(reactor))


def test_a_worker_runs_no_admin_no_acme_and_no_active_checks(tmp_path: Path) -> None:
    """
    The admin interface, the ACME client and active checks are the
    supervisor's; a pool without checks keeps its back-off in the worker.
    """
    proxy = worker(tmp_path)
    assert proxy.admin is None and proxy.acme is None
    assert proxy.monitors["checked"].check is None
    assert type(proxy.monitors["checked"]) is not HealthMonitor
    assert type(proxy.monitors["passive"]) is HealthMonitor
    # It still answers ACME challenges the supervisor publishes.
    proxy.challenges.publish("tok", "tok.key")
    assert proxy.challenges.answer(b"/.well-known/acme-challenge/tok") == b"tok.key"


def test_pictures_and_certificates_reach_the_worker(tmp_path: Path) -> None:
    """
    A picture with a backend down takes it down here; a certificate
    obtained by the supervisor is installed on the TLS listener.
    """
    proxy = worker(tmp_path)
    control = WorkerControl(proxy.reactor, 1)
    control.proxy = proxy
    supervisor = Registry(
        [Pool("checked", [proxy.registry.get("checked").backends[0]])]
    )
    shown = json.loads(json.dumps(encode_pools(supervisor)))
    shown[0]["backends"][0]["healthy"] = False
    shown[0]["backends"][0]["reason"] = "3 checks failed"
    control.handle({"type": "pools", "pools": shown}, [])
    backend = proxy.registry.get("checked").backends[0]
    assert backend.state is BackendState.DOWN
    leaf = trustme.CA().issue_cert("a.example.com")
    certificate = ServerCertificate.from_pem(
        leaf.private_key_and_cert_chain_pem.bytes(), None, "acme"
    )
    control.handle({"type": "certificate", **certificate_to_json(certificate)}, [])
    assert ("a.example.com",) in proxy._obtained
    control.handle({"type": "challenge", "token": "t", "answer": "t.k"}, [])
    assert proxy.challenges.answer(b"/.well-known/acme-challenge/t") == b"t.k"
    control.handle({"type": "challenge", "token": "t", "answer": None}, [])
    assert proxy.challenges.answer(b"/.well-known/acme-challenge/t") is None


def test_a_reload_from_the_supervisor_is_applied_and_answered(tmp_path: Path) -> None:
    """The config text in a config message is applied; its problems returned."""
    proxy = worker(tmp_path)
    control = WorkerControl(proxy.reactor, 1)
    control.proxy = proxy
    source = str(tmp_path / "rproxy.toml")
    text = (
        "workers = 2\n[pools.checked]\n"
        'backends = ["127.0.0.1:8001", "127.0.0.1:8003"]\n'
        '[[listeners]]\nname = "web"\nprotocol = "http"\n'
        'listen = "tcp:0:interface=127.0.0.1"\npool = "checked"\n'
    )
    assert control.handle({"type": "config", "config": text, "source": source}, []) == {
        "problems": []
    }
    assert len(proxy.registry.get("checked").backends) == 2
    answer = control.handle(
        {"type": "config", "config": "workers = [", "source": source}, []
    )
    assert answer is not None and "invalid TOML" in answer["problems"][0]


def test_a_worker_that_cannot_start_exits(tmp_path: Path) -> None:
    """A start it cannot carry out (here, a broken config) stops the worker's
    reactor, so that the supervisor starts it again with back-off."""
    reactor = MemoryReactorClock()
    reactor.running = True
    control = WorkerControl(reactor, 1)
    control.handle(
        {"type": "start", "config": "workers = [", "source": "x", "listeners": []}, []
    )
    assert reactor.hasStopped and control.proxy is None


def test_stats_are_sent_only_while_there_is_an_admin_to_show_them(
    tmp_path: Path,
) -> None:
    """A reload that removes [admin] stops the stats; one that adds it back
    starts them again."""
    proxy = worker(tmp_path)
    control = WorkerControl(proxy.reactor, 1)
    control.proxy = proxy
    source = str(tmp_path / "rproxy.toml")
    plain = (
        'workers = 2\n[pools.checked]\nbackends = ["127.0.0.1:8001"]\n'
        '[[listeners]]\nname = "web"\nprotocol = "http"\n'
        'listen = "tcp:0:interface=127.0.0.1"\npool = "checked"\n'
    )
    with_admin = plain + '[admin]\nlisten = "tcp:0:interface=127.0.0.1"\n'
    control.handle({"type": "config", "config": with_admin, "source": source}, [])
    assert control._stats.running
    control.handle({"type": "config", "config": plain, "source": source}, [])
    assert not control._stats.running


def test_a_worker_without_its_socket_exits(tmp_path: Path) -> None:
    """A start whose listener has no socket handed over (the proxy refuses
    to start: SystemExit) stops the worker too."""
    reactor = MemoryReactorClock()
    reactor.running = True
    control = WorkerControl(reactor, 1)
    control.channel = ControlProtocol(lambda m, f: None, lambda r: None)
    text = (
        'workers = 2\n[pools.web]\nbackends = ["127.0.0.1:8001"]\n'
        '[[listeners]]\nname = "web"\nprotocol = "http"\n'
        'listen = "tcp:0:interface=127.0.0.1"\npool = "web"\n'
    )
    control.handle(
        {"type": "start", "config": text, "source": "x.toml", "listeners": []}, []
    )
    assert reactor.hasStopped


DISCOVERING = """
workers = 2

[pools.api]
discover = "dns:api.internal:8080"
health = { check = "none" }

[[listeners]]
name = "web"
protocol = "http"
listen = "tcp:0:interface=127.0.0.1"
pool = "api"
"""


def test_a_discovering_pool_follows_the_supervisor_across_reloads(
    tmp_path: Path,
) -> None:
    """
    A worker asks no DNS; the members the supervisor's discovery found come
    in pictures, and a reload keeps them (not the file's empty list), the
    same objects with their counters.
    """
    source = str(tmp_path / "rproxy.toml")
    reactor = MemoryReactorClock()
    config = parse_config(tomllib.loads(DISCOVERING), source)
    proxy = WorkerProxy(config, reactor, 1, Adopted(reactor))
    assert proxy.discovery.services == {}
    control = WorkerControl(reactor, 1)
    control.proxy = proxy
    found = Pool(
        "api",
        [Backend("10.0.0.1", 8080, name="10.0.0.1:8080"), Backend("10.0.0.2", 8080)],
    )
    control.handle({"type": "pools", "pools": encode_pools([found])}, [])
    pool = proxy.registry.get("api")
    kept = pool.get("10.0.0.1:8080")
    kept.connections_total = 7
    found.remove("10.0.0.2:8080")
    control.handle({"type": "pools", "pools": encode_pools([found])}, [])
    answer = control.handle(
        {"type": "config", "config": DISCOVERING, "source": source}, []
    )
    assert answer == {"problems": []}
    assert [b.name for b in pool.backends] == ["10.0.0.1:8080"]
    assert pool.get("10.0.0.1:8080") is kept and kept.connections_total == 7
