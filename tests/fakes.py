"""The shared test doubles now live in L{rproxy.testing}; this module keeps
the old import path working."""

from rproxy.testing import (
    Attempt,
    FakeEndpoints,
    HalfCloseTransport,
    captured_access,
    connect,
)

__all__ = [
    "Attempt",
    "FakeEndpoints",
    "HalfCloseTransport",
    "captured_access",
    "connect",
]
