"""Compression on real sockets: an in-process twisted.web backend behind an
HTTP listener whose route carries the Compress filter, fetched with
C{curl --compressed} for each coding (curl decodes gzip, br and zstd), the
bodies byte-identical to the backend's, a 20 MiB body streamed through."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.server import Site
from twisted.web.static import File

from rproxy.backends import Backend, Pool, Registry
from rproxy.http.filters.compress import Compress
from rproxy.http.listener import HTTPProxyFactory, HTTPSettings
from rproxy.http.routing import Route, Router

CODINGS = ("gzip", "br", "zstd")


@functools.cache
def api_json(size: int, seed: int = 7) -> bytes:
    """
    About C{size} bytes of JSON shaped like an API's list of records.
    """
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "an", "el", "or"]

    def word() -> str:
        return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 5)))

    records, total = [], 0
    while total < size:
        record = json.dumps(
            {
                "id": len(records),
                "name": f"{word().title()} {word().title()}",
                "email": f"{word()}@{word()}.example",
                "active": rng.random() < 0.7,
                "score": round(rng.random() * 1000, 3),
                "tags": [word() for _ in range(rng.randint(0, 4))],
            }
        )
        records.append(record)
        total += len(record) + 1
    return ("[" + ",".join(records) + "]").encode()


@functools.cache
def big_text() -> bytes:
    """
    20 MiB of text: twenty different MiB of records.
    """
    return b"".join(api_json(1 << 20, seed)[: 1 << 20] for seed in range(20))


class CurlCompressedTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.curl = shutil.which("curl")
        if self.curl is None:
            raise SkipTest("curl is not installed")
        root = Path(tempfile.mkdtemp(prefix="rproxy-compress-"))
        self.addCleanup(shutil.rmtree, root, True)
        self.root = root
        self.page = api_json(1 << 20)
        (root / "page.json").write_bytes(self.page)
        big = big_text()
        (root / "big.txt").write_bytes(big)
        self.big_digest = hashlib.sha256(big).hexdigest()

        site = Site(File(str(root), defaultType="application/octet-stream"))
        site.displayTracebacks = False
        backend = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(backend.stopListening)
        pool = Pool("web", [Backend("127.0.0.1", backend.getHost().port)])
        self.factory = HTTPProxyFactory(
            Registry([pool]),
            reactor,
            HTTPSettings(
                listener="front",
                router=Router([Route(pool="web", filters=[Compress()])]),
            ),
        )
        listening = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(self.factory.keep_alive.close_all)
        self.addCleanup(self.factory.connections.drain, 5.0, reactor)
        self.port = listening.getHost().port

    @inlineCallbacks
    def curl_get(self, path: str, coding: str) -> Any:
        """
        Fetch C{path} with C{curl --compressed} asking for C{coding}; the
        decoded body's file and the response's fields (names lowercased).
        """
        out = self.root / f"out-{coding}"
        headers = self.root / f"headers-{coding}"
        _, stderr, code = yield getProcessOutputAndValue(
            self.curl,
            [
                "--silent",
                "--show-error",
                "--max-time",
                "60",
                "--compressed",
                "-H",
                f"Accept-Encoding: {coding}",
                "-o",
                str(out),
                "-D",
                str(headers),
                f"http://127.0.0.1:{self.port}{path}",
            ],
            env=dict(os.environ),
        )
        self.assertEqual(code, 0, stderr)
        fields = {}
        for line in headers.read_bytes().decode("latin-1").split("\r\n")[1:]:
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        return out, fields

    @inlineCallbacks
    def test_each_coding_round_trips_through_curl(self) -> Any:
        """curl --compressed gets the 1 MiB JSON body byte-identical in gzip,
        br and zstd, chunked, with Vary and without Content-Length."""
        for coding in CODINGS:
            out, fields = yield self.curl_get("/page.json", coding)
            self.assertEqual(fields.get("content-encoding"), coding)
            self.assertEqual(fields.get("transfer-encoding"), "chunked")
            self.assertEqual(fields.get("vary"), "Accept-Encoding")
            self.assertNotIn("content-length", fields)
            self.assertEqual(out.read_bytes(), self.page)

    @inlineCallbacks
    def test_identity_when_not_asked(self) -> Any:
        """A client asking for identity gets the body as the backend sent
        it, with its Content-Length."""
        out, fields = yield self.curl_get("/page.json", "identity")
        self.assertNotIn("content-encoding", fields)
        self.assertEqual(fields.get("content-length"), str(len(self.page)))
        self.assertEqual(out.read_bytes(), self.page)

    @inlineCallbacks
    def test_a_20_mib_body_streams_through(self) -> Any:
        """20 MiB of text arrives whole and identical in each coding."""
        for coding in CODINGS:
            out, fields = yield self.curl_get("/big.txt", coding)
            self.assertEqual(fields.get("content-encoding"), coding, fields)
            digest = hashlib.sha256(out.read_bytes()).hexdigest()
            self.assertEqual(digest, self.big_digest)
