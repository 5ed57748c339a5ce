"""Reading the server name from a ClientHello: exact bytes, real OpenSSL
hellos, and properties over generated and mangled ones."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rproxy.tls.clienthello import (
    MAX_CLIENT_HELLO,
    ClientHello,
    ClientHelloError,
    NeedMore,
    read_server_name,
)
from tests.tls_records import (
    client_hello,
    extension,
    handshake,
    hello_body,
    openssl_client_hello,
    records,
    server_name,
    vector,
)


def hello_with(*extensions: bytes) -> bytes:
    return records(handshake(hello_body(extensions)))


class ServerNameTests(SynchronousTestCase):
    def assertName(self, data: bytes, name: str | None) -> None:
        self.assertEqual(read_server_name(data), ClientHello(name))

    def assertRefused(self, data: bytes, why: str) -> None:
        with self.assertRaises(ClientHelloError) as caught:
            read_server_name(data)
        self.assertIn(why, str(caught.exception))

    def test_reads_the_host_name(self) -> None:
        """The host_name of the server_name extension is the server name."""
        self.assertName(client_hello("db.example.com"), "db.example.com")

    def test_exact_bytes_of_a_minimal_hello(self) -> None:
        """A hello written out byte by byte is read."""
        data = bytes.fromhex(
            "16 0301 0040"  # handshake record, TLS 1.0, 64 bytes
            "01 00003c"  # ClientHello, 60 bytes
            "0303" + "00" * 32 + "00"  # version, random, no session id
            "0002 1301 01 00"  # one suite, one compression method
            "0011"  # 17 bytes of extensions
            "0000 000d 000b 00 0008 612e6578 616d706c"  # server_name "a.exampl"
        )
        self.assertName(data, "a.exampl")

    def test_name_is_lowercased_without_trailing_dot(self) -> None:
        """Names compare as DNS names: case and a final dot do not count."""
        self.assertName(client_hello("DB.Example.COM."), "db.example.com")

    def test_no_extensions_means_no_name(self) -> None:
        """A hello without an extensions block has no server name."""
        self.assertName(records(handshake(hello_body(None))), None)

    def test_extensions_without_server_name(self) -> None:
        """Other extensions only: no server name."""
        self.assertName(client_hello(None), None)
        self.assertName(hello_with(), None)

    def test_other_name_types_are_skipped(self) -> None:
        """Only a host_name (type 0) entry names the server."""
        self.assertName(hello_with(server_name(b"x", name_type=7)), None)
        two = vector(2, b"\x07" + vector(2, b"odd") + b"\x00" + vector(2, b"b.c"))
        self.assertName(hello_with(extension(0, two)), "b.c")

    def test_reassembles_a_hello_split_over_records(self) -> None:
        """The handshake message is put back together from its fragments."""
        for sizes in ([1], [3, 1000], [4], [100, 7, 1]):
            self.assertName(client_hello("a.example.com", sizes), "a.example.com")

    def test_ignores_what_follows_the_hello(self) -> None:
        """Bytes after the hello (a ChangeCipherSpec, early data) are not read."""
        extra = records(b"\x01", content_type=20) + b"\xff" * 50
        self.assertName(client_hello() + extra, "db.example.com")

    def test_every_prefix_needs_more(self) -> None:
        """Short of the whole hello, more is needed, and never too much more."""
        for full in (client_hello(), client_hello("x.y", [1, 2, 3])):
            for end in range(len(full)):
                result = read_server_name(full[:end])
                assert isinstance(result, NeedMore), (end, result)
                self.assertGreater(result.at_least, end)
                self.assertLessEqual(result.at_least, len(full))

    def test_real_openssl_client_hello(self) -> None:
        """The ClientHello of a real OpenSSL client, TLS 1.3 and 1.2."""
        self.assertName(openssl_client_hello(b"db.example.com"), "db.example.com")
        self.assertName(
            openssl_client_hello(b"www.example.com", True), "www.example.com"
        )
        self.assertName(openssl_client_hello(None), None)

    def test_refuses_other_protocols_from_the_first_byte(self) -> None:
        """HTTP, SSH and the like are refused before a record header is whole."""
        self.assertRefused(b"G", "not TLS")
        self.assertRefused(b"GET / HTTP/1.1\r\n\r\n", "not TLS")
        self.assertRefused(b"SSH-2.0-OpenSSH_9.6\r\n", "not TLS")

    def test_refuses_an_sslv2_style_hello(self) -> None:
        """An SSLv2-compatible hello (high bit set, no records) is not TLS."""
        self.assertRefused(bytes.fromhex("802e0103010015"), "not TLS")

    def test_refuses_wrong_record_version_and_type(self) -> None:
        """Only TLS handshake records (type 22, version 3.x) may carry it."""
        self.assertRefused(b"\x16\x02", "version major 2")
        self.assertRefused(records(b"\x01\x00", content_type=23), "not TLS")
        message = handshake(hello_body([]))
        mixed = records(message[:10]) + records(message[10:], content_type=21)
        self.assertRefused(mixed, "record type 21")

    def test_refuses_other_handshake_messages(self) -> None:
        """A handshake that is not a ClientHello is refused."""
        self.assertRefused(records(handshake(hello_body([]), msg_type=2)), "type 2")

    def test_refuses_empty_and_oversized_records(self) -> None:
        """Records of 0 bytes or over 2^14 are malformed."""
        self.assertRefused(b"\x16\x03\x01\x00\x00", "record of 0 bytes")
        self.assertRefused(b"\x16\x03\x01\x40\x01", "record of 16385 bytes")

    def test_a_large_hello_within_the_limit_is_read(self) -> None:
        """A 60 kB hello (a padding extension) over four records is read."""
        padding = extension(21, b"\x00" * 60000)
        data = records(handshake(hello_body([server_name(b"a.b"), padding])))
        self.assertLessEqual(len(data), MAX_CLIENT_HELLO)
        self.assertName(data, "a.b")

    def test_record_headers_count_against_the_limit(self) -> None:
        """12 kB in 1-byte records takes 72 kB: refused within the limit."""
        padding = extension(21, b"\x00" * 12000)
        data = records(handshake(hello_body([padding])), [1])
        self.assertIsInstance(read_server_name(data[:60000]), NeedMore)
        self.assertRefused(data[:MAX_CLIENT_HELLO], f"larger than {MAX_CLIENT_HELLO}")

    def test_refuses_a_hello_too_large_to_buffer(self) -> None:
        """A hello that cannot fit in the limit is refused once that is known."""
        header = records(b"\x01" + (MAX_CLIENT_HELLO).to_bytes(3, "big"))
        self.assertRefused(header, f"larger than {MAX_CLIENT_HELLO}")
        with self.assertRaises(ClientHelloError):
            read_server_name(client_hello(), limit=100)
        self.assertIsInstance(read_server_name(client_hello()[:3], limit=100), NeedMore)

    def test_refuses_fields_running_past_the_message(self) -> None:
        """Lengths that do not fit are malformed, never an IndexError."""
        cases = {
            "session id over 32": hello_body([], session_id=b"\x00" * 33),
            "3 cipher suite bytes": hello_body([], suites=b"\x13\x01\x13"),
            "0 cipher suite bytes": hello_body([], suites=b""),
            "no compression": hello_body([], compression=b""),
            "version and random": b"\x03\x03" + b"\x00" * 10,
            "cipher suites runs past": hello_body(None, session_id=b"")[:40],
            "bytes after the extensions": hello_body([]) + b"\x00",
            "extensions runs past": hello_body(None) + b"\x00\x09\x00",
        }
        for why, body in cases.items():
            self.assertRefused(records(handshake(body)), why)

    def test_refuses_bad_extensions(self) -> None:
        """Truncated, repeated or unreadable extensions are malformed."""
        sni = server_name(b"a.b")
        self.assertRefused(hello_with(sni, sni), "extension 0 twice")
        self.assertRefused(hello_with(b"\x00\x0a\x00\x05\x00"), "runs past")
        self.assertRefused(hello_with(extension(0, b"\x00\x09\x00")), "runs past")
        after = extension(0, vector(2, b"\x00" + vector(2, b"a")) + b"!")
        self.assertRefused(hello_with(after), "after the server names")
        self.assertRefused(hello_with(server_name(b"caf\xc3\xa9.fr")), "non-ASCII")
        self.assertRefused(hello_with(server_name(b"")), "empty host name")


hellos = st.builds(
    lambda name, extra, sizes: records(
        handshake(hello_body([*extra, server_name(name.encode())])), sizes
    ),
    st.from_regex(r"[a-z0-9]{1,20}(\.[a-z0-9]{1,20}){0,3}", fullmatch=True),
    st.lists(
        st.builds(extension, st.integers(1, 65535), st.binary(max_size=300)).filter(
            lambda e: e[:2] != b"\x00\x00"
        ),
        max_size=4,
        unique_by=lambda e: e[:2],
    ),
    st.lists(st.integers(1, 16384), min_size=1, max_size=5),
)


class ServerNamePropertyTests(SynchronousTestCase):
    @given(st.binary(max_size=600))
    def test_any_bytes_give_an_answer_or_a_refusal(self, data: bytes) -> None:
        """Arbitrary bytes: a result, or ClientHelloError, nothing else."""
        try:
            result = read_server_name(data)
        except ClientHelloError:
            return
        if isinstance(result, NeedMore):
            self.assertGreater(result.at_least, len(data))

    @given(hellos, st.data())
    def test_mangled_hellos_give_an_answer_or_a_refusal(
        self, hello: bytes, data: st.DataObject
    ) -> None:
        """A hello with bytes changed or cut: never an unexpected exception."""
        mangled = bytearray(hello)
        for _ in range(data.draw(st.integers(1, 4))):
            index = data.draw(st.integers(0, len(mangled) - 1))
            mangled[index] = data.draw(st.integers(0, 255))
        end = data.draw(st.integers(0, len(mangled)))
        with contextlib.suppress(ClientHelloError):
            read_server_name(bytes(mangled[:end]))

    @settings(max_examples=50)
    @given(hellos, st.data())
    def test_needs_more_until_whole_then_reads_the_name(
        self, hello: bytes, data: st.DataObject
    ) -> None:
        """Every prefix asks for no more than the hello has; the whole reads."""
        end = data.draw(st.integers(0, len(hello) - 1))
        result = read_server_name(hello[:end])
        assert isinstance(result, NeedMore)
        self.assertTrue(end < result.at_least <= len(hello))
        whole = read_server_name(hello)
        assert isinstance(whole, ClientHello)
        self.assertIsNotNone(whole.server_name)
