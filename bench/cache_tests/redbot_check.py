#!/usr/bin/env python3
"""REDbot's notes on a few responses, direct and through a caching proxy.

Serves a few resources from an in-process Twisted backend on 127.0.0.1
(``--backend-port``; cacheable with validators, a static file with ranges,
a gzip-negotiated JSON body, a ``Vary``, ``private`` and ``no-store``),
checks each one with REDbot (PyPI ``redbot``, its ``redbot URL -o har``
command, active checks included: conditional requests, ranges, gzip
negotiation) directly and through each proxy given by ``--proxy`` (twice:
the first fetch fills the cache, the second may be a hit), and lists the BAD
notes the proxy added, those it has that the direct check does not.  Exits
1 when a proxy added any.

    pip install redbot                      # its own venv is fine: --redbot PATH
    python bench/cache_tests/redbot_check.py --nginx
    python bench/cache_tests/redbot_check.py --backend-port 8010 \\
        --proxy http://127.0.0.1:8080       # a proxy in front of 127.0.0.1:8010

``--nginx`` starts nginx with this directory's ``nginx.conf`` (its
``proxy_cache``) in front of the backend and checks through it.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.web import http, static
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

HERE = Path(__file__).resolve().parent
#: the resources' Last-Modified: a day before the backend starts.
LAST_MODIFIED = time.time() - 86400
BODY = b"".join(b"line %05d of a cacheable text body\n" % n for n in range(400))
JSON_BODY = json.dumps([{"id": n, "name": f"item {n}"} for n in range(300)]).encode()

#: path -> what it shows.
PATHS = {
    "/cacheable": "max-age=60, ETag and Last-Modified",
    "/static/file.txt": "a static file (ranges, Last-Modified), max-age=60",
    "/negotiated.json": "gzip when asked, Vary: Accept-Encoding, an ETag per encoding",
    "/vary": "Vary: Accept-Language, max-age=60",
    "/private": "Cache-Control: private, max-age=60",
    "/no-store": "Cache-Control: no-store",
}


class Page(Resource):
    """One fixed response: C{headers} plus validators, conditional GETs and
    HEAD answered (by twisted.web), optionally gzip-negotiated."""

    isLeaf = True

    def __init__(
        self,
        body: bytes,
        content_type: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
        validators: bool = True,
        negotiate: bool = False,
    ) -> None:
        super().__init__()
        self.body = body
        self.content_type = content_type
        self.headers = list(headers)
        self.validators = validators
        self.negotiate = negotiate
        self.gzipped = gzip.compress(body, mtime=0)

    def render_GET(self, request: Request) -> bytes:
        body, etag = self.body, hashlib.sha256(self.body).hexdigest()[:16]
        if self.negotiate:
            request.setHeader(b"vary", b"Accept-Encoding")
            accepts = request.getHeader(b"accept-encoding") or b""
            if b"gzip" in accepts.lower():
                body, etag = self.gzipped, etag + "-gz"
                request.setHeader(b"content-encoding", b"gzip")
        request.setHeader(b"content-type", self.content_type)
        for name, value in self.headers:
            request.setHeader(name, value)
        if self.validators:
            cached = request.setETag(f'"{etag}"'.encode())
            cached = request.setLastModified(LAST_MODIFIED) or cached
            if cached == http.CACHED:
                return b""
        request.setHeader(b"content-length", b"%d" % len(body))
        return body


class CachedFile(static.File):
    """Static files (twisted.web answers ranges and If-Modified-Since) with a
    freshness lifetime."""

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"cache-control", b"max-age=60")
        return super().render_GET(request)


def backend_site(files: Path) -> Site:
    """The backend: the resources of L{PATHS}; C{files} gets the static file."""
    (files / "file.txt").write_bytes(BODY)
    root = Resource()
    root.putChild(
        b"cacheable", Page(BODY, b"text/plain", [(b"cache-control", b"max-age=60")])
    )
    root.putChild(b"static", CachedFile(str(files)))
    root.putChild(
        b"negotiated.json",
        Page(
            JSON_BODY,
            b"application/json",
            [(b"cache-control", b"max-age=60")],
            negotiate=True,
        ),
    )
    root.putChild(
        b"vary",
        Page(
            BODY,
            b"text/plain",
            [(b"cache-control", b"max-age=60"), (b"vary", b"Accept-Language")],
        ),
    )
    root.putChild(
        b"private",
        Page(BODY, b"text/plain", [(b"cache-control", b"private, max-age=60")]),
    )
    root.putChild(
        b"no-store",
        Page(BODY, b"text/plain", [(b"cache-control", b"no-store")], validators=False),
    )
    site = Site(root)
    site.noisy = False
    return site


@contextlib.contextmanager
def running_backend(port: int) -> Iterator[int]:
    """The backend on 127.0.0.1:C{port} (0: any), its reactor in a thread."""
    with tempfile.TemporaryDirectory(prefix="rproxy-redbot-") as files:
        site = backend_site(Path(files))
        listening = reactor.listenTCP(port, site, interface="127.0.0.1")  # type: ignore[attr-defined]
        thread = threading.Thread(
            target=reactor.run,  # type: ignore[attr-defined]
            kwargs={"installSignalHandlers": False},
            daemon=True,
        )
        thread.start()
        try:
            yield listening.getHost().port
        finally:
            reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]
            thread.join(10)


@dataclass(frozen=True)
class Note:
    """One REDbot note (subnotes flattened away)."""

    level: str
    note_id: str
    subject: str
    summary: str

    def key(self) -> tuple[str, str]:
        """What is compared between checks: the note and what it is about."""
        return (self.note_id, self.subject)


def redbot_command() -> list[str] | None:
    """How to run REDbot's command line: this Python's redbot package, or a
    C{redbot} on the PATH; None when neither is there."""
    if importlib.util.find_spec("redbot") is not None:
        return [sys.executable, "-m", "redbot.cli"]
    found = shutil.which("redbot")
    return [found] if found else None


def redbot_notes(redbot: Sequence[str], url: str, timeout: float = 60.0) -> list[Note]:
    """REDbot's notes on C{url} (the main response and its active checks)."""
    done = subprocess.run(
        [*redbot, url, "-o", "har"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    har = json.loads(done.stdout)
    if error := har["log"].get("_red_error"):
        raise RuntimeError(f"REDbot could not check {url}: {error}")
    return [
        Note(m["level"], m["note_id"], m["subject"], m["summary"])
        for entry in har["log"]["entries"]
        for m in entry["_red_messages"]
    ]


def added(direct: Sequence[Note], proxied: Sequence[Note], level: str) -> list[Note]:
    """The notes of C{level} through the proxy that the direct check lacks."""
    seen = {note.key() for note in direct if note.level == level}
    return [n for n in proxied if n.level == level and n.key() not in seen]


@dataclass
class PathReport:
    """One path: its BAD notes direct, and what each proxy fetch added."""

    path: str
    direct_bad: list[Note]
    #: proxy URL -> [notes added on the first fetch, on the second].
    added_bad: dict[str, list[list[Note]]]
    added_warn: dict[str, list[list[Note]]]


def check(
    redbot: Sequence[str],
    backend: str,
    proxies: Sequence[str],
    paths: Sequence[str] = (),
) -> list[PathReport]:
    """Check C{paths} (default L{PATHS}) on C{backend} and through C{proxies}
    (base URLs without a trailing slash)."""
    reports = []
    for path in paths or PATHS:
        direct = redbot_notes(redbot, backend + path)
        report = PathReport(path, [n for n in direct if n.level == "BAD"], {}, {})
        for proxy in proxies:
            fetches = [redbot_notes(redbot, proxy + path) for _ in range(2)]
            report.added_bad[proxy] = [added(direct, f, "BAD") for f in fetches]
            report.added_warn[proxy] = [added(direct, f, "WARN") for f in fetches]
        reports.append(report)
    return reports


def show(reports: Sequence[PathReport]) -> tuple[str, bool]:
    """The reports as text, and whether any proxy added a BAD note."""
    lines, any_bad = [], False
    for report in reports:
        lines.append(f"{report.path} ({PATHS.get(report.path, '')})")
        for note in report.direct_bad:
            lines.append(f"  direct BAD {note.note_id} [{note.subject}] {note.summary}")
        for proxy, fetches in report.added_bad.items():
            for number, notes in enumerate(fetches, 1):
                any_bad |= bool(notes)
                status = "adds no BAD note" if not notes else "adds BAD:"
                lines.append(f"  via {proxy}, fetch {number}: {status}")
                lines += [
                    f"    BAD {n.note_id} [{n.subject}] {n.summary}" for n in notes
                ]
                lines += [
                    f"    (WARN {n.note_id} [{n.subject}] {n.summary})"
                    for n in report.added_warn[proxy][number - 1]
                ]
    return "\n".join(lines), any_bad


@contextlib.contextmanager
def nginx_in_front(backend_port: int) -> Iterator[str]:
    """nginx with this directory's nginx.conf in front of the backend."""
    sys.path.insert(0, str(HERE))
    import run  # the sibling script: its config rendering and processes

    with tempfile.TemporaryDirectory(prefix="rproxy-redbot-nginx-") as directory:
        work = Path(directory)
        procs = run.Processes(work)
        port = run.free_port()
        conf = work / "nginx.conf"
        conf.write_text(
            run.render("nginx.conf", port=port, origin=backend_port, work=work)
        )
        nginx = run.program("nginx", "/usr/sbin/nginx")
        procs.start("nginx", [nginx, "-p", str(work), "-e", "stderr", "-c", str(conf)])
        try:
            procs.wait_for_port("nginx", port)
            yield f"http://127.0.0.1:{port}"
        finally:
            procs.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend-port", type=int, default=0)
    parser.add_argument(
        "--proxy", action="append", default=[], help="a proxy's base URL (repeatable)"
    )
    parser.add_argument("--nginx", action="store_true", help="check through nginx too")
    parser.add_argument("--redbot", help="the redbot program (another venv's)")
    parser.add_argument("--json", type=Path, help="write the reports here")
    parser.add_argument("paths", nargs="*", help=f"of {', '.join(PATHS)}")
    args = parser.parse_args(argv)
    redbot = [args.redbot] if args.redbot else redbot_command()
    if not redbot:
        parser.error("redbot is not installed (pip install redbot), or give --redbot")
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(running_backend(args.backend_port))
        proxies = [p.rstrip("/") for p in args.proxy]
        if args.nginx:
            proxies.append(stack.enter_context(nginx_in_front(port)))
        print(f"backend on 127.0.0.1:{port}", flush=True)
        reports = check(redbot, f"http://127.0.0.1:{port}", proxies, args.paths)
    text, any_bad = show(reports)
    print(text)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in reports], indent=1) + "\n")
    return 1 if any_bad else 0


if __name__ == "__main__":
    sys.exit(main())
