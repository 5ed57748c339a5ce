"""Automatic certificates over ACME: the service (L{rproxy.acme.service}),
its steps, storage and the HTTP-01 challenge answers
(L{rproxy.acme.challenges}).

Importing this package costs nothing: the service and the C{acme} library it
uses are imported only when asked for.
"""

from typing import Any

__all__ = ["AcmeService", "renewal_reason", "retry_delay"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rproxy.acme import service

        return getattr(service, name)
    raise AttributeError(f"module 'rproxy.acme' has no attribute {name!r}")
