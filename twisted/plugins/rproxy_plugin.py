"""twistd plugin entry for rproxy: ``twistd -n rproxy --config FILE``.

Names ``rproxy.tap`` only, so that listing plugins imports nothing heavy.
"""

from twisted.application.service import ServiceMaker

rproxy = ServiceMaker(
    "rproxy",
    "rproxy.tap",
    "A reverse proxy and load balancer (TCP passthrough and HTTP/1.1).",
    "rproxy",
)
