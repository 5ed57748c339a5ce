"""The HTTP/2 flood limits, each gone past by an in-memory client: the
connection gets GOAWAY (ENHANCE_YOUR_CALM or, for streams, the h2 library's
code), is closed, and the limit's counter goes up."""

from __future__ import annotations

import h2.errors
import h2.settings
from hyperframe.frame import DataFrame, PingFrame, PriorityFrame, SettingsFrame

from rproxy.http.h2.floods import Budget, FloodGuard
from rproxy.http.h2.settings import H2Settings

from ._h2 import H2Case, frames, get, raw_headers

CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


class FloodTests(H2Case):
    h2_settings = H2Settings(
        prior_knowledge=True,
        max_resets=5,
        max_settings=5,
        max_pings=5,
        max_priority=5,
        max_empty_data=5,
        max_header_block=2000,
        max_header_list_size=4000,
        max_concurrent_streams=3,
        flood_window=10.0,
    )

    def assert_goaway(self, client: object, limit: str, code: int = CALM) -> None:
        transport = client.transport  # type: ignore[attr-defined]
        goaways = [f for f in frames(transport.value()) if f.type == 0x7]
        self.assertEqual([g.error_code for g in goaways[-1:]], [code])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.factory.h2_stats.floods[limit], 1)

    def test_rapid_reset_past_the_budget_is_goaway(self) -> None:
        """Streams opened and reset at once past the budget: GOAWAY."""
        client = self.connect()
        for _ in range(6):
            stream = client.request(get())
            client.conn.reset_stream(stream)
            client.send()
        self.assert_goaway(client, "rapid_reset")

    def test_resets_within_the_budget_are_fine(self) -> None:
        """Resets spread out in time stay within the budget."""
        client = self.connect()
        for _ in range(12):
            stream = client.request(get())
            client.conn.reset_stream(stream)
            client.send()
            self.clock.advance(3)
            client.receive()
        self.assertFalse(client.transport.disconnecting)
        self.assertEqual(self.factory.h2_stats.floods["rapid_reset"], 0)

    def test_settings_flood_is_goaway(self) -> None:
        """SETTINGS frames past the budget: GOAWAY."""
        client = self.connect()
        client.send_raw(SettingsFrame(0).serialize() * 6)
        self.assert_goaway(client, "settings")

    def test_ping_flood_is_goaway(self) -> None:
        """PING frames past the budget: GOAWAY."""
        client = self.connect()
        client.send_raw(PingFrame(0, opaque_data=b"12345678").serialize() * 6)
        self.assert_goaway(client, "ping")

    def test_priority_flood_is_goaway(self) -> None:
        """PRIORITY frames past the budget: GOAWAY."""
        client = self.connect()
        client.send_raw(
            PriorityFrame(1, depends_on=0, stream_weight=16).serialize() * 6
        )
        self.assert_goaway(client, "priority")

    def test_empty_data_flood_is_goaway(self) -> None:
        """Empty DATA frames that do not end their stream: GOAWAY."""
        client = self.connect()
        stream = client.request(get(), end=False)
        client.send_raw(DataFrame(stream, data=b"").serialize() * 6)
        self.assert_goaway(client, "empty_data")

    def test_continuation_flood_is_goaway(self) -> None:
        """A header block grown past its byte cap by CONTINUATION frames:
        GOAWAY, before the block is ever decoded."""
        client = self.connect()
        big = [*get(), *[(b"x-pad-%d" % i, b"v" * 100) for i in range(30)]]
        client.send_raw(raw_headers(1, big, split=200, encoder=client.conn.encoder))
        self.assert_goaway(client, "header_block")
        self.assertEqual(self.endpoints.attempts, [])

    def test_hpack_bomb_is_goaway(self) -> None:
        """A small header block that decodes to a huge header list (one
        indexed field repeated): GOAWAY."""
        client = self.connect()
        # Index a 1000-byte field once, then refer to it 8 times (a few bytes
        # each): 8000 bytes of header list from a small block.
        headers = [*get(), *[(b"x-bomb", b"b" * 1000)] * 8]
        client.send_raw(raw_headers(1, headers, encoder=client.conn.encoder))
        self.assert_goaway(client, "header_list")
        self.assertEqual(self.endpoints.attempts, [])

    def test_too_many_concurrent_streams_is_refused(self) -> None:
        """Past max_concurrent_streams the connection is refused (GOAWAY)."""
        client = self.connect()
        self.assertEqual(client.conn.remote_settings.max_concurrent_streams, 3)
        encoder = client.conn.encoder
        for stream in (1, 3, 5, 7):
            client.send_raw(raw_headers(stream, get(), encoder=encoder))
        self.assert_goaway(
            client, "concurrent_streams", h2.errors.ErrorCodes.PROTOCOL_ERROR
        )
        self.assertEqual(len(self.endpoints.attempts), 3)


class GuardTests(H2Case):
    def test_budget_drains_over_its_window(self) -> None:
        """A budget of 2 per second takes 2 at once, then 1 more after half
        a second."""
        budget = Budget(2, 1.0)
        self.assertEqual([budget.spend(0.0) for _ in range(3)], [True, True, False])
        self.assertTrue(Budget(2, 1.0).spend(0.0))
        budget = Budget(2, 1.0)
        budget.spend(0.0)
        budget.spend(0.0)
        self.assertTrue(budget.spend(0.5))

    def test_guard_counts_frames_split_anywhere(self) -> None:
        """Frames are counted whatever the reads cut them into."""
        guard = FloodGuard(H2Settings(max_pings=2), preface=False)
        data = PingFrame(0, opaque_data=b"12345678").serialize() * 3
        verdicts = [guard.feed(data[i : i + 1], 0.0) for i in range(len(data))]
        self.assertEqual([v for v in verdicts if v], ["ping"])

    def test_ping_acks_are_not_counted(self) -> None:
        """PING and SETTINGS acknowledgements do not count."""
        guard = FloodGuard(H2Settings(max_pings=1, max_settings=1), preface=False)
        ack = PingFrame(0, opaque_data=b"12345678", flags=["ACK"]).serialize()
        settings_ack = SettingsFrame(0, flags=["ACK"]).serialize()
        self.assertIsNone(guard.feed((ack + settings_ack) * 5, 0.0))
