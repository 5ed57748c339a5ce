"""A route's allow and deny lists: the client address a request is checked
on (a table of X-Forwarded-For chains through trusted proxies), and the
filter answering 403 through the real codec (rproxy.testing.HTTPHarness)."""

from __future__ import annotations

import pytest
from twisted.trial.unittest import SynchronousTestCase

from rproxy.admission import AddressList
from rproxy.http.client_address import forwarded_client
from rproxy.http.filters.access import ClientAccess
from rproxy.http.headers import ForwardingPolicy
from rproxy.http.listener import HTTPSettings
from rproxy.http.routing import Route, Router
from rproxy.testing import HTTPHarness
from tests.admission.test_networks import networks

TRUSTING = ForwardingPolicy(trusted=("192.0.2.0/24", "2001:db8::/32"))
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"X-Forwarded-For", value.encode()) for value in values]


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        # An untrusted peer is the client, whatever it says.
        ("203.0.113.5", xff("198.51.100.1"), "203.0.113.5"),
        # A trusted peer without the header is the client.
        ("192.0.2.1", [], "192.0.2.1"),
        ("192.0.2.1", xff("198.51.100.1"), "198.51.100.1"),
        # From the right: trusted hops are skipped, the first other wins,
        # what comes before it is the client's own say-so.
        ("192.0.2.1", xff("10.6.6.6, 198.51.100.1, 192.0.2.9"), "198.51.100.1"),
        ("192.0.2.1", xff("10.6.6.6", "198.51.100.1, 192.0.2.9"), "198.51.100.1"),
        # Every hop trusted: the leftmost.
        ("192.0.2.1", xff("192.0.2.8, 192.0.2.9"), "192.0.2.8"),
        # Garbage stops the walk at the address found so far.
        ("192.0.2.1", xff("198.51.100.1, unknown"), "192.0.2.1"),
        ("192.0.2.1", xff("198.51.100.1, , 192.0.2.9"), "192.0.2.9"),
        # Ports and brackets are taken off.
        ("192.0.2.1", xff("198.51.100.1:4711"), "198.51.100.1"),
        ("192.0.2.1", xff("[2001:db9::1]:443"), "2001:db9::1"),
        ("2001:db8::1", xff("2001:db9::7"), "2001:db9::7"),
        # A dual-stack socket's mapped address is trusted as its IPv4 one.
        ("::ffff:192.0.2.1", xff("198.51.100.1"), "198.51.100.1"),
    ],
)
def test_the_client_behind_trusted_proxies(
    peer: str, headers: list[tuple[bytes, bytes]], client: str
) -> None:
    """The client is the first untrusted address from the right."""
    assert forwarded_client(peer, headers, TRUSTING) == client


def test_nobody_trusted_means_the_peer() -> None:
    """Without trusted proxies the header is never read."""
    assert (
        forwarded_client("192.0.2.1", xff("1.2.3.4"), ForwardingPolicy()) == "192.0.2.1"
    )


class RouteAccessTests(SynchronousTestCase):
    def harness(self, lists: AddressList, **settings: object) -> HTTPHarness:
        routes = [
            Route("web", path_prefix="/admin/", filters=(ClientAccess(lists),)),
            Route("web"),
        ]
        harness = HTTPHarness(
            settings=HTTPSettings("front", Router(routes), **settings)  # type: ignore[arg-type]
        )
        self.addCleanup(harness.close)
        return harness

    def test_a_denied_client_gets_403_and_the_backend_is_not_asked(self) -> None:
        """A request from a denied address is answered 403 on the same
        connection, counted, and its access event names the list."""
        harness = self.harness(AddressList(deny=networks("192.0.2.0/24")))
        client = harness.connect("192.0.2.7").request("GET", "/admin/users")
        response = client.response()
        self.assertEqual((response.status, response.body), (403, b"forbidden\n"))
        self.assertEqual(harness.endpoints.attempts, [])
        self.assertFalse(client.closed)
        self.assertEqual(harness.factory.stats.refused["route_denied"], 1)
        [event] = harness.access
        self.assertEqual((event["status"], event["refused_by"]), (403, "route.deny"))

    def test_other_routes_and_clients_pass(self) -> None:
        """The list is the route's only; an allowed client reaches the
        backend, and its access event has no refused_by."""
        harness = self.harness(AddressList(allow=networks("192.0.2.0/24")))
        other = harness.connect("198.51.100.1").request("GET", "/public")
        harness.backend_responds(OK)
        self.assertEqual(other.response().status, 200)
        allowed = harness.connect("192.0.2.7").request("GET", "/admin/")
        harness.backend_responds(OK)
        self.assertEqual(allowed.response().status, 200)
        refused = harness.connect("198.51.100.1").request("GET", "/admin/")
        self.assertEqual(refused.response().status, 403)
        self.assertEqual(
            [event["refused_by"] for event in harness.access],
            [None, None, "route.allow"],
        )

    def test_the_real_client_behind_a_trusted_proxy_is_checked(self) -> None:
        """Behind a trusted proxy the X-Forwarded-For client is checked, not
        the proxy; an untrusted peer's header is ignored."""
        harness = self.harness(
            AddressList(deny=networks("203.0.113.0/24")), policy=TRUSTING
        )
        denied = harness.connect("192.0.2.1").request(
            "GET", "/admin/", headers=[("X-Forwarded-For", "203.0.113.9")]
        )
        self.assertEqual(denied.response().status, 403)
        lying = harness.connect("198.51.100.1").request(
            "GET", "/admin/", headers=[("X-Forwarded-For", "192.0.2.50")]
        )
        harness.backend_responds(OK)
        self.assertEqual(lying.response().status, 200)
        spoofed = harness.connect("203.0.113.9").request(
            "GET", "/admin/", headers=[("X-Forwarded-For", "198.51.100.1")]
        )
        self.assertEqual(spoofed.response().status, 403)

    def test_a_refused_request_body_is_not_read_into_the_backend(self) -> None:
        """A POST refused by the list is answered without a backend, and
        the connection closes rather than read the rest of the body."""
        harness = self.harness(AddressList(deny=networks("192.0.2.0/24")))
        client = harness.connect("192.0.2.7").send(
            b"POST /admin/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc"
        )
        self.assertEqual(client.response().status, 403)
        self.assertEqual(harness.endpoints.attempts, [])
        self.assertTrue(client.closed)
