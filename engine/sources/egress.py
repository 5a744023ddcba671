"""Where syncd may connect to over HTTP: the egress policy of `http` sources and callbacks.

Loopback, private, link-local, shared (CGNAT), unspecified, multicast and other addresses that
are not globally routable are refused, in IPv4 and in every IPv6 form that carries an IPv4
address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, 6to4, Teredo, NAT64), and so are the
names of cloud metadata services and `localhost`, unless the operator lists them: a host name
(exact, case-insensitive; it may then resolve to any address), an IP address or a network
(`10.20.0.0/16`).

The policy is checked twice. When a definition is validated (`EgressPolicy.url_problem`), on
the URL's host and on what the name resolves to then. And when connecting: the sessions made by
`client_session` resolve names through `GuardedResolver`, which refuses a name resolving to a
refused address (so a name that changes its answer after validation, DNS rebinding, gains
nothing), and create every socket through a factory that checks the address it is about to
connect to (IP literals skip the resolver, and redirects are connections like any other).
A refusal is an `EgressRefused`, an `OSError` aiohttp reports as a connection error
(`ClientConnectorError.os_error`); `refusal_of` finds it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from config.settings import normalize_host, parse_host_entry

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
        "metadata.packet.net",
    }
)
"""Names of cloud instance metadata services (their addresses are link-local or private, and
refused as such; the names are refused before any lookup)."""
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$")
RESOLVE_TIMEOUT_S = 3.0
"""Bound on the lookup made while validating a definition (the connect-time check remains)."""


class EgressRefused(OSError):
    """A connection the egress policy does not allow."""

    def __init__(self, host: str, reason: str, setting: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__(f"{host}: {reason}; refused (list it in {setting} to allow it)")


def refusal_of(exc: BaseException) -> EgressRefused | None:
    """The `EgressRefused` behind an aiohttp connection error, if that is what it is."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, EgressRefused):
            return seen
        inner = seen.os_error if isinstance(seen, aiohttp.ClientConnectorError) else None
        seen = inner or seen.__cause__
    return None


def parse_address(host: str) -> IPAddress | None:
    """The IP address a host literally is, or None for a name."""
    try:
        return ipaddress.ip_address(normalize_host(host).split("%", 1)[0])
    except ValueError:
        return None


def legacy_ipv4(host: str) -> bool:
    """Whether the host is an IPv4 address in a legacy form (`2130706433`, `127.1`, `0x7f.1`)
    that resolvers map onto an address although it is not written as one."""
    name = normalize_host(host)
    if not _NUMERIC_HOST.match(name) or parse_address(name) is not None:
        return False
    try:
        socket.inet_aton(name)
    except OSError:
        return False
    return True


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    packed = address.packed
    if packed[:12] == bytes(12) and not (address.is_unspecified or address.is_loopback):
        return ipaddress.IPv4Address(packed[12:])  # IPv4-compatible, ::a.b.c.d
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(packed[12:])
    return None


def refused_kind(address: IPAddress) -> str | None:
    """Why an address is refused unless listed ("link-local", ...), or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:  # reaches the IPv4 address (DNS64 answers public hosts so)
            kind = refused_kind(inner)
            return None if kind is None else f"{kind} (IPv4 {inner} inside IPv6)"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("shared CGNAT", isinstance(address, ipaddress.IPv4Address) and address in _SHARED),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


@dataclass(frozen=True)
class EgressPolicy:
    """The hosts listed as allowed, and the checks of hosts, addresses and URLs against them.

    `setting` names where the list comes from, for messages.
    """

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    setting: str = "SYNCD_EGRESS_ALLOWED_HOSTS"

    @classmethod
    def parse(
        cls, entries: Iterable[str], setting: str = "SYNCD_EGRESS_ALLOWED_HOSTS"
    ) -> EgressPolicy:
        """A policy from list entries: names, addresses and networks; ValueError naming a bad
        entry."""
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            network = parse_host_entry(entry)
            if isinstance(network, str):
                names.add(network)
            else:
                networks.append(network)
        return cls(frozenset(names), tuple(networks), setting)

    def listed_name(self, host: str) -> bool:
        """Whether the host name is listed as it is."""
        return normalize_host(host) in self.names

    def listed_address(self, address: IPAddress) -> bool:
        """Whether the address (or the IPv4 address inside it) is in a listed network."""
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and (inner := embedded_ipv4(address)):
            candidates.append(inner)
        return any(
            a in net for a in candidates for net in self.networks if a.version == net.version
        )

    def address_problem(self, address: IPAddress) -> str | None:
        """Why connecting to this address is refused, or None."""
        if self.listed_address(address):
            return None
        kind = refused_kind(address)
        return None if kind is None else f"{address} is a {kind} address"

    def host_problem(self, host: str) -> str | None:
        """Why a host is refused before any lookup (metadata names, `localhost`, refused IP
        literals, legacy numeric IPv4 forms), or None."""
        name = normalize_host(host)
        if not name:
            return "the URL has no host"
        if name in self.names:
            return None
        address = parse_address(name)
        if address is not None:
            return self.address_problem(address)
        if legacy_ipv4(name):
            return f"{name!r} is an IPv4 address in a legacy numeric form; write it dotted"
        if name in METADATA_NAMES:
            return f"{name} is a cloud metadata service"
        if name == "localhost" or name.endswith(".localhost"):
            return f"{name} is a loopback name"
        return None

    def refusal(self, host: str, reason: str) -> EgressRefused:
        """The error of a refused connection to `host`."""
        return EgressRefused(host, reason, self.setting)

    async def url_problem(self, url: str, timeout_s: float = RESOLVE_TIMEOUT_S) -> str | None:
        """Why a URL's host is refused (its name looked up, within `timeout_s`), or None.

        A name that cannot be looked up now passes: the check at connect time decides then.
        """
        try:
            parsed = URL(url)
        except (TypeError, ValueError) as exc:
            return f"not a URL: {exc}"
        host = parsed.host or ""
        problem = self.host_problem(host)
        if problem is not None or self.listed_name(host) or parse_address(host) is not None:
            return problem
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                infos = await loop.getaddrinfo(
                    normalize_host(host), parsed.port or 80, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError, UnicodeError):
            return None
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            reason = self.address_problem(address)
            if reason is not None:
                return f"{normalize_host(host)} resolves to {reason}"
        return None


@dataclass
class _Guard:
    """The connect-time checks of one session: its resolver and its socket factory."""

    policy: EgressPolicy
    inner: AbstractResolver
    vetted: set[str] = field(default_factory=set)
    """Addresses a listed name resolved to: allowed at connect time although refused kinds."""

    def socket(self, addr_info: Any) -> socket.socket:
        """Create the socket of a connection, after checking the address it will connect to."""
        family, type_, proto, _, sockaddr = addr_info
        host = str(sockaddr[0])
        if host not in self.vetted:
            address = ipaddress.ip_address(host.split("%", 1)[0])
            problem = self.policy.address_problem(address)
            if problem is not None:
                raise self.policy.refusal(host, problem)
        return socket.socket(family=family, type=type_, proto=proto)


class GuardedResolver(AbstractResolver):
    """Resolves through aiohttp's default resolver, refusing names the policy refuses and names
    that resolve to a refused address (unless the name itself is listed)."""

    def __init__(self, guard: _Guard) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        policy = self._guard.policy
        problem = policy.host_problem(host)
        if problem is not None:
            raise policy.refusal(host, problem)
        results = await self._guard.inner.resolve(host, port, family)
        if policy.listed_name(host):
            self._guard.vetted.update(r["host"] for r in results)
            return results
        for result in results:
            address = ipaddress.ip_address(result["host"].split("%", 1)[0])
            reason = policy.address_problem(address)
            if reason is not None:
                raise policy.refusal(host, f"resolves to {reason}")
        return results

    async def close(self) -> None:
        await self._guard.inner.close()


def client_session(policy: EgressPolicy, **kwargs: Any) -> aiohttp.ClientSession:
    """An `aiohttp.ClientSession` whose every connection obeys `policy` (no proxy from the
    environment either). Call it on the event loop."""
    guard = _Guard(policy, aiohttp.DefaultResolver())
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(guard), socket_factory=guard.socket)
    return aiohttp.ClientSession(connector=connector, trust_env=False, **kwargs)
