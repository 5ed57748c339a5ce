"""The C{[admin]} part of the config: where the admin interface listens and
the token its control endpoints ask for.

L{rproxy.config} calls L{parse_admin}; problems go to the shared
L{Problems} under C{admin.KEY}.  The token file is read here, when the config
is loaded (at start and on every reload), so a missing, unreadable or empty
file is a config error like any other.
"""

from __future__ import annotations

import ipaddress
import re

from attrs import field, frozen

from rproxy.config._tls import _base, _path
from rproxy.config._validate import Table, server_endpoint

__all__ = ["AdminConfig", "is_loopback_endpoint", "parse_admin"]

_ADMIN_KEYS = ("listen", "token_file")

#: a colon not escaped with a backslash: where endpoint string parts end.
_PART = re.compile(r"(?<!\\):")


@frozen
class AdminConfig:
    """
    The admin interface (status page, JSON status, metrics, controls).

    @ivar listen: a Twisted server endpoint string.
    @ivar token_file: the file the token was read from, or None.
    @ivar token: what a control request must send as C{Authorization:
        Bearer TOKEN}; None if no token is needed.
    """

    listen: str
    token_file: str | None = None
    token: str | None = field(default=None, repr=False)


def is_loopback_endpoint(description: str) -> bool:
    """
    Whether the server endpoint C{description} accepts connections from this
    host only: a C{unix:} socket, or a C{tcp:}, C{tcp6:} or C{ssl:} endpoint
    whose C{interface=} is a loopback address.  Without C{interface=} a TCP
    endpoint listens on every address, so it is not.
    """
    kind, *args = _PART.split(description)
    kind = kind.strip().lower()
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.strip() == "interface":
            try:
                return ipaddress.ip_address(value.replace("\\:", ":")).is_loopback
            except ValueError:
                return False
    return False


def _read_token(admin: Table, path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        detail = getattr(e, "strerror", None) or str(e)
        admin.report("token_file", f"cannot read {path}: {detail}")
        return None
    if not token:
        admin.report("token_file", f"{path} is empty: write the token in it")
        return None
    if any(c.isspace() or not c.isprintable() for c in token):
        admin.report(
            "token_file", f"{path}: the token must be one word of printable characters"
        )
        return None
    return token


def parse_admin(top: Table, source: str) -> AdminConfig | None:
    """
    The C{[admin]} section, or None if there is none (no admin interface).

    A listener that others could reach (not loopback, not a Unix socket)
    needs a C{token_file}: the admin interface is never public by accident.
    """
    admin = top.table("admin", _ADMIN_KEYS)
    if admin is None:
        return None
    listen = admin.require("listen", server_endpoint)
    token_file = admin.get("token_file", _path(_base(source)), None)
    token = None if token_file is None else _read_token(admin, token_file)
    if listen is not None and token_file is None and not is_loopback_endpoint(listen):
        admin.report(
            "listen",
            f"{listen!r} is reachable from other hosts: listen on a loopback "
            "address (interface=127.0.0.1 or ::1) or a unix: socket, or set "
            "token_file",
        )
        return None
    if listen is None or (token_file is not None and token is None):
        return None
    return AdminConfig(listen, token_file, token)
