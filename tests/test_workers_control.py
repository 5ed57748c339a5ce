"""Tests for the control channel between the supervisor and a worker, driven
over StringTransport, and for what crosses it (certificates, the config's
text)."""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import pytest
import trustme
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from rproxy.config import ConfigError
from rproxy.tls import ServerCertificate
from rproxy.workers._control import ControlLostError, ControlProtocol, Message
from rproxy.workers._worker import (
    certificate_from_json,
    certificate_to_json,
    config_from_text,
)


class FdTransport(StringTransport):
    """A StringTransport that notes the descriptors sent, and where."""

    def __init__(self) -> None:
        super().__init__()
        self.fds: list[tuple[int, int]] = []

    def sendFileDescriptor(self, fd: int) -> None:
        self.fds.append((fd, len(self.value())))


def frame(message: Message) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack("!I", len(data)) + data


def messages(transport: StringTransport) -> list[Message]:
    data = transport.value()
    out = []
    while data:
        (size,) = struct.unpack("!I", data[:4])
        out.append(json.loads(data[4 : 4 + size]))
        data = data[4 + size :]
    return out


class Channel:
    """One end of the channel with a recording handler."""

    def __init__(self, reply: Message | None = None) -> None:
        self.received: list[tuple[Message, list[int]]] = []
        self.lost: list[Failure] = []
        self.reply = reply
        self.protocol = ControlProtocol(self.handle, self.lost.append)
        self.transport = FdTransport()
        self.protocol.makeConnection(self.transport)

    def handle(self, message: Message, fds: list[int]) -> Message | None:
        self.received.append((message, fds))
        if message["type"] == "boom":
            raise RuntimeError("boom")
        return self.reply


def test_messages_are_length_prefixed_json() -> None:
    """What send writes is a 4-byte length then the JSON object."""
    channel = Channel()
    channel.protocol.send({"type": "pools", "pools": []})
    assert messages(channel.transport) == [{"type": "pools", "pools": []}]


def test_received_messages_reach_the_handler_and_asked_ones_are_answered() -> None:
    """A message with an id gets the handler's answer as a reply naming it."""
    channel = Channel(reply={"problems": []})
    channel.protocol.dataReceived(frame({"type": "config", "id": 7, "config": ""}))
    assert channel.received[0][0]["type"] == "config"
    assert messages(channel.transport) == [
        {"type": "reply", "reply_to": 7, "problems": []}
    ]


def test_a_message_split_anywhere_is_read_whole() -> None:
    """Bytes arriving one at a time still make one message."""
    channel = Channel()
    for byte in frame({"type": "pools", "pools": [1, 2]}):
        channel.protocol.dataReceived(bytes([byte]))
    assert [m for m, _ in channel.received] == [{"type": "pools", "pools": [1, 2]}]


def test_ask_fires_with_the_reply() -> None:
    """ask numbers its message and fires with the reply to that number."""
    channel = Channel()
    answers: list[Message] = []
    channel.protocol.ask({"type": "config"}).addCallback(answers.append)
    [sent] = messages(channel.transport)
    channel.protocol.dataReceived(
        frame({"type": "reply", "reply_to": sent["id"], "problems": ["x"]})
    )
    assert answers == [{"type": "reply", "reply_to": sent["id"], "problems": ["x"]}]


def test_a_handler_that_fails_answers_with_a_problem() -> None:
    """A failing handler is logged and the asker told, not left waiting."""
    channel = Channel()
    channel.protocol.dataReceived(frame({"type": "boom", "id": 1}))
    [reply] = messages(channel.transport)
    assert reply["reply_to"] == 1 and reply["problems"] == [
        "handling boom failed; see the log"
    ]


def test_garbage_is_dropped() -> None:
    """Bytes that are not a message object are logged and skipped."""
    channel = Channel()
    channel.protocol.stringReceived(b"not json")
    channel.protocol.stringReceived(b"[1, 2]")
    channel.protocol.dataReceived(frame({"type": "pools", "pools": []}))
    assert [m["type"] for m, _ in channel.received] == ["pools"]


def test_a_socket_is_sent_with_its_message() -> None:
    """send_socket queues the descriptor before the message's bytes."""
    channel = Channel()
    channel.protocol.send_socket(9, {"type": "listener", "name": "web"})
    assert channel.transport.fds == [(9, 0)]
    assert messages(channel.transport)[0]["name"] == "web"


def test_a_listener_message_takes_the_descriptor_that_came_with_it() -> None:
    """Descriptors go, in order, to the listener messages they came with."""
    channel = Channel()
    read, write = os.pipe()
    try:
        channel.protocol.fileDescriptorReceived(read)
        channel.protocol.fileDescriptorReceived(write)
        channel.protocol.dataReceived(
            frame({"type": "listener", "name": "one"})
            + frame({"type": "pools", "pools": []})
            + frame({"type": "listener", "name": "two"})
        )
        assert [(m["type"], fds) for m, fds in channel.received] == [
            ("listener", [read]),
            ("pools", []),
            ("listener", [write]),
        ]
    finally:
        os.close(read)
        os.close(write)


def test_closing_fails_the_questions_and_closes_stray_descriptors() -> None:
    """
    When the channel closes, pending asks fail with ControlLostError, a
    descriptor no message took is closed, and C{lost} is called once.
    """
    channel = Channel()
    failures: list[Failure] = []
    channel.protocol.ask({"type": "config"}).addErrback(failures.append)
    read, write = os.pipe()
    channel.protocol.fileDescriptorReceived(read)
    channel.protocol.connectionLost(Failure(ConnectionError("gone")))
    os.close(write)
    assert failures[0].check(ControlLostError)
    assert len(channel.lost) == 1
    with pytest.raises(OSError):
        os.fstat(read)
    answers: list[Any] = []
    channel.protocol.ask({"type": "config"}).addErrback(answers.append)
    assert answers[0].check(ControlLostError)
    channel.protocol.send({"type": "pools"})  # dropped, no error


def test_certificates_cross_as_pem_whole() -> None:
    """A certificate with its chain and key comes back the same."""
    ca = trustme.CA()
    leaf = ca.issue_cert("a.example.com")
    pem = leaf.private_key_and_cert_chain_pem.bytes()
    original = ServerCertificate.from_pem(pem, None, "acme")
    copy = certificate_from_json(json.loads(json.dumps(certificate_to_json(original))))
    assert copy.names == original.names
    assert copy.certificate == original.certificate
    assert copy.chain == original.chain
    assert copy.key.private_numbers() == original.key.private_numbers()  # type: ignore[union-attr]


def test_the_config_text_reads_as_the_file_would() -> None:
    """The text the supervisor validated gives the worker the same config."""
    text = """
workers = 2
[pools.web]
backends = ["127.0.0.1:8080"]
[[listeners]]
name = "front"
listen = "tcp:8000"
pool = "web"
"""
    config = config_from_text(text, "/etc/rproxy/rproxy.toml")
    assert config.workers == 2 and config.source == "/etc/rproxy/rproxy.toml"
    with pytest.raises(ConfigError) as info:
        config_from_text("workers = [", "/etc/rproxy/rproxy.toml")
    assert info.value.errors[0].startswith("/etc/rproxy/rproxy.toml: invalid TOML")
