"""The listener keys http2 and h2c: parsed, checked, and turned into the
listener's HTTP/2 settings and ALPN offer."""

from __future__ import annotations

import tomllib

import pytest

from rproxy.config import ConfigError, parse_config
from rproxy.http.h2.settings import H2Settings, h2_settings
from rproxy.service._build import http_settings

BASE = """
[pools.web]
backends = ["127.0.0.1:8001"]

[[listeners]]
name = "front"
protocol = "http"
listen = "tcp:8080"
pool = "web"
"""
TLS = """
[listeners.tls]
certificates = [{ cert = "c.pem", key = "c.key" }]
"""


def _listener(text: str):  # type: ignore[no-untyped-def]
    config = parse_config(tomllib.loads(text), "rproxy.toml")
    return config, config.listeners[0]


def test_http2_is_on_by_default_and_h2c_off() -> None:
    """A listener says http2 = true and h2c = false unless told."""
    _, listener = _listener(BASE)
    assert (listener.http2, listener.h2c) == (True, False)


def test_h2c_listener_speaks_http2_by_prior_knowledge() -> None:
    """h2c = true on a listener without TLS gives it prior-knowledge HTTP/2."""
    config, listener = _listener(BASE + "h2c = true\n")
    settings = http_settings(config, listener)
    assert settings.http2 == H2Settings(prior_knowledge=True)


def test_plain_listener_without_h2c_is_http11_only() -> None:
    """Without TLS and without h2c a listener speaks HTTP/1.1 only."""
    config, listener = _listener(BASE)
    assert http_settings(config, listener).http2 is None


def test_tls_listener_speaks_http2_unless_http2_is_false() -> None:
    """With TLS, http2 decides; ALPN picks it."""
    assert h2_settings(True, False, tls=True) == H2Settings()
    assert h2_settings(False, False, tls=True) is None
    _, listener = _listener(BASE + "http2 = false\n")
    assert listener.http2 is False


def test_h2c_on_a_tls_listener_is_refused() -> None:
    """h2c is for cleartext listeners: with tls it is an error."""
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(BASE + "h2c = true\n" + TLS), "rproxy.toml")
    assert any("h2c" in error for error in info.value.errors)


def test_http2_keys_are_for_http_listeners_only() -> None:
    """A tcp listener with http2 is an error."""
    text = BASE.replace('protocol = "http"', 'protocol = "tcp"') + "http2 = false\n"
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text), "rproxy.toml")
    assert any("http2" in error for error in info.value.errors)
