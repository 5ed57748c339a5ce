"""The HTTP proxy in front of a real nginx (installed by .ci/run): keep-alive
reuse seen from nginx's side, static files byte-identical, HEAD and errors."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from rproxy.backends import Backend, Pool, Registry
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router
from tests.integration.helpers import free_port, wait_for_port

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 128; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{port};
        location = /who {{ return 200 "$connection $connection_requests\\n"; }}
        location /files/ {{ alias {root}/files/; }}
    }}
}}
"""


class NginxBackendTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            raise SkipTest("nginx is not installed (.ci/run installs it)")
        root = Path(tempfile.mkdtemp(prefix="rproxy-nginx-"))
        self.addCleanup(shutil.rmtree, root, True)
        (root / "files").mkdir()
        self.blob = os.urandom(64 * 1024)
        (root / "files" / "64k.bin").write_bytes(self.blob)
        port = free_port()
        (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=port))
        self.nginx = subprocess.Popen(
            [nginx, "-p", str(root), "-c", str(root / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(self.nginx.wait, 30)
        self.addCleanup(self.nginx.terminate)
        wait_for_port(port)
        pool = Pool("nginx", [Backend("127.0.0.1", port)])
        self.factory = HTTPProxyFactory(
            Registry([pool]),
            reactor,
            HTTPSettings(listener="front", router=Router([Route(pool="nginx")])),
        )
        listening = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(self.factory.keep_alive.close_all)
        self.addCleanup(self.factory.connections.drain, 5.0, reactor)
        self.port = listening.getHost().port

    def get_all(self, *calls: tuple[str, str]) -> Any:
        def run() -> list[tuple[int, bytes, dict[str, str]]]:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            results = []
            try:
                for method, path in calls:
                    conn.request(method, path)
                    r = conn.getresponse()
                    results.append((r.status, r.read(), dict(r.getheaders())))
            finally:
                conn.close()
            return results

        return deferToThread(run)

    @inlineCallbacks
    def test_backend_connection_is_reused(self) -> Any:
        """nginx sees one connection carrying request after request."""
        results = yield self.get_all(*[("GET", "/who")] * 5)
        seen = [r[1].split() for r in results]
        self.assertEqual(len({connection for connection, _ in seen}), 1)
        self.assertEqual([int(n) for _, n in seen], [1, 2, 3, 4, 5])

    @inlineCallbacks
    def test_static_file_head_and_404(self) -> Any:
        """A 64 KiB file arrives intact; HEAD has no body; 404 passes."""
        (get, head, missing) = yield self.get_all(
            ("GET", "/files/64k.bin"), ("HEAD", "/files/64k.bin"), ("GET", "/files/no")
        )
        self.assertEqual(get[0], 200)
        self.assertEqual(
            hashlib.sha256(get[1]).digest(), hashlib.sha256(self.blob).digest()
        )
        self.assertEqual((head[0], head[1]), (200, b""))
        self.assertEqual(head[2]["Content-Length"], str(len(self.blob)))
        self.assertEqual(missing[0], 404)
