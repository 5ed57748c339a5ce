"""What admission costs, without sockets: microseconds per address-list
check against 10k networks (and a linear scan of them with ipaddress, for
scale), per accept-rate check, per tracked connection (the per-client
count), per client-address lookup behind a trusted proxy, and the memory
the accept-rate table holds per address.

    taskset -c 1 python bench/admission_bench.py [--networks N] [--rounds N]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import itertools
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rproxy._tracking import ConnectionTracker
from rproxy.admission import AcceptRate, AddressList, Admission
from rproxy.admission.accept import AdmissionFactory, Refusals
from rproxy.http.client_address import forwarded_client
from rproxy.http.headers import ForwardingPolicy
from rproxy.stats import ListenerStats


def per_call(function: Callable[[], object], rounds: int) -> float:
    """Microseconds per call, best of three runs of C{rounds} calls."""
    best = float("inf")
    for _ in range(3):
        gc.disable()
        start = time.perf_counter()
        for _ in range(rounds):
            function()
        best = min(best, time.perf_counter() - start)
        gc.enable()
    return best / rounds * 1e6


def checking(table: AddressList, hosts: list[str], rounds: int) -> float:
    """Microseconds per check of addresses cycling through C{hosts}."""
    cycle = itertools.cycle(hosts)
    return per_call(lambda: table.refusal(next(cycle)), rounds)


def random_networks(
    rng: random.Random, count: int
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """C{count} networks, four in five IPv4, prefixes spread as real block
    lists spread them (mostly /24 and /32, some wider, IPv6 /32 to /128)."""
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    v4_lengths = [8, 12, 16, 20, 22, 24, 24, 24, 28, 32, 32, 32]
    v6_lengths = [32, 48, 56, 64, 64, 128]
    for index in range(count):
        if index % 5:
            length = rng.choice(v4_lengths)
            networks.append(
                ipaddress.IPv4Network((rng.getrandbits(32), length), strict=False)
            )
        else:
            length = rng.choice(v6_lengths)
            networks.append(
                ipaddress.IPv6Network((rng.getrandbits(128), length), strict=False)
            )
    return networks


def lists(count: int, rounds: int) -> None:
    rng = random.Random(13)
    networks = random_networks(rng, count)
    start = time.perf_counter()
    table = AddressList(deny=networks)
    built = time.perf_counter() - start
    v4 = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(1000)]
    v6 = [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(1000)]
    inside = [str(n.network_address + 1) for n in networks[:1000]]
    mapped = ["::ffff:" + host for host in v4]
    lengths4 = len(table._v4)
    lengths6 = len(table._v6)
    print(
        f"address lists: {count} networks built in {built * 1e3:.1f} ms, "
        f"{lengths4} IPv4 and {lengths6} IPv6 prefix lengths"
    )
    for name, hosts in (
        ("IPv4, in no network (every length tried)", v4),
        ("IPv4-mapped IPv6, in none", mapped),
        ("IPv6, in none", v6),
        ("an address inside a listed network", inside),
    ):
        print(f"  {name}: {checking(table, hosts, rounds):.2f} µs")
    # The worst case: a network of every prefix length of both families.
    every = AddressList(
        deny=[
            *(
                ipaddress.IPv4Network((rng.getrandbits(32), n), strict=False)
                for n in range(1, 33)
            ),
            *(
                ipaddress.IPv6Network((rng.getrandbits(128), n), strict=False)
                for n in range(1, 129)
            ),
            *networks,
        ]
    )
    for name, hosts in (("IPv4", v4), ("IPv6", v6)):
        print(
            f"  {name} in none, with every prefix length listed: "
            f"{checking(every, hosts, rounds):.2f} µs"
        )
    # For scale: what a linear scan with ipaddress costs.
    host = ipaddress.ip_address(v4[0])
    v4_networks = [n for n in networks if n.version == 4]
    print(
        f"  (a linear scan of the {len(v4_networks)} IPv4 networks with "
        "ipaddress: "
        f"{per_call(lambda: any(host in n for n in v4_networks), 20):.0f} µs)"
    )


def rate(rounds: int) -> None:
    accept = AcceptRate(50, 1.0, 50)
    hosts = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(65536)]
    now = [0.0]
    cycle = itertools.cycle(hosts)

    def take() -> None:
        now[0] += 1e-6
        accept.take(next(cycle), now[0])

    print(f"accept rate: {per_call(take, rounds):.2f} µs per check (65536 addresses)")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    full = AcceptRate(50, 1.0, 50)
    keys = [f"2001:db8:{i >> 16 & 0xFFFF:x}:{i & 0xFFFF:x}::/64" for i in range(65536)]
    for key in keys:
        full.take(key, 0.0)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    keys_size = sum(sys.getsizeof(key) for key in keys)
    print(
        f"  table of 65536 addresses: {used / 65536:.0f} bytes each with the "
        f"key strings ({(used - keys_size) / 65536:.0f} without them)"
    )
    flood = AcceptRate(50, 1.0, 50)
    for index in range(100_000):
        flood.take(f"f{index}", 0.0)
    print(f"  after 100k distinct addresses: {len(flood)} remembered")


class _Peer:
    host = "192.0.2.7"


class _Transport:
    def getPeer(self) -> _Peer:  # noqa: N802
        return _Peer()


class _Connection:
    transport = _Transport()

    def shut_down(self, abort: bool) -> None:
        pass


def tracker(rounds: int) -> None:
    connections = ConnectionTracker()
    connection = _Connection()

    def add_discard() -> None:
        connections.add(connection)
        connections.discard(connection)

    print(
        "tracked connection (add and discard, with the per-client count): "
        f"{per_call(add_discard, rounds):.2f} µs"
    )


def client(rounds: int) -> None:
    policy = ForwardingPolicy(trusted=("192.0.2.0/24",))
    headers = [(b"Host", b"a"), (b"X-Forwarded-For", b"198.51.100.7, 192.0.2.9")]
    cost = per_call(lambda: forwarded_client("192.0.2.1", headers, policy), rounds)
    print(f"client behind a trusted proxy (X-Forwarded-For walked): {cost:.2f} µs")


class _Clock:
    now = 0.0

    def seconds(self) -> float:
        self.now += 1e-6
        return self.now


class _Inner:
    def buildProtocol(self, addr: object) -> object:
        return self


class _Address:
    def __init__(self, host: str) -> None:
        self.host = host


def gate(rounds: int) -> None:
    rng = random.Random(7)
    networks = random_networks(rng, 10_000)
    admission = Admission(
        max_connections=10_000,
        max_per_client=100,
        rate=AcceptRate(1e9, 1.0, 10**9),
        addresses=AddressList(deny=networks),
    )
    factory = AdmissionFactory(
        _Inner(),  # type: ignore[arg-type]
        admission,
        connections=ConnectionTracker(),
        stats=ListenerStats(),
        clock=_Clock(),
        refusals=Refusals("bench"),
    )
    hosts = itertools.cycle(
        [_Address(f"10.{i >> 8 & 255}.{i & 255}.1") for i in range(4096)]
    )
    print(
        "admitting a connection (10k-network deny list, per-IP limit, rate): "
        f"{per_call(lambda: factory.buildProtocol(next(hosts)), rounds):.2f} µs"
    )
    denied = _Address(str(networks[1].network_address))
    refusing = AdmissionFactory(
        _Inner(),  # type: ignore[arg-type]
        Admission(addresses=AddressList(deny=networks)),
        connections=ConnectionTracker(),
        stats=ListenerStats(),
        clock=_Clock(),
        refusals=Refusals("bench"),
    )
    print(
        "refusing one (closed at accept, counted, no access log observer): "
        f"{per_call(lambda: refusing.buildProtocol(denied), rounds):.2f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--networks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200_000)
    args = parser.parse_args()
    lists(args.networks, args.rounds)
    rate(args.rounds)
    tracker(args.rounds)
    gate(args.rounds)
    client(args.rounds)


if __name__ == "__main__":
    main()
