"""Backends found in DNS: C{discover = "dns:NAME:PORT"} (A/AAAA) and
C{discover = "srv:_service._proto.NAME"} (SRV) pools.

L{DNSDiscovery} is the service that asks DNS for one pool; the decisions it
makes are plain functions: records to backends (L{srv_backends},
L{address_backends}), when to ask again (L{clamp_ttl}, L{retry_delay},
L{hold_expired}) and what changed (L{diff_backends}).  Applying a changed
answer to a running pool is the owner's job
(L{rproxy.service._discovery}), the same way a reload changes a pool.
"""

from rproxy.config._discovery import DiscoveryConfig
from rproxy.discovery._diff import AnswerChange, diff_backends
from rproxy.discovery._lookup import Answer, DiscoveryError, describe_error, lookup
from rproxy.discovery._records import (
    ServiceRecord,
    address_backends,
    addresses_in,
    answer_ttl,
    service_records,
    srv_backends,
)
from rproxy.discovery._resolver import close_resolver, make_resolver
from rproxy.discovery._service import ApplyAnswer, DiscoveryState, DNSDiscovery
from rproxy.discovery._timing import clamp_ttl, hold_expired, retry_delay

__all__ = [
    "Answer",
    "AnswerChange",
    "ApplyAnswer",
    "DNSDiscovery",
    "DiscoveryConfig",
    "DiscoveryError",
    "DiscoveryState",
    "ServiceRecord",
    "address_backends",
    "addresses_in",
    "answer_ttl",
    "clamp_ttl",
    "close_resolver",
    "describe_error",
    "diff_backends",
    "hold_expired",
    "lookup",
    "make_resolver",
    "retry_delay",
    "service_records",
    "srv_backends",
]
