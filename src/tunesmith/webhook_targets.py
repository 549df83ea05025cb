"""Where a webhook may be sent: a receiver's host is resolved and every address it resolves to
must be public, unless the operator allows it (``TUNESMITH_WEBHOOK_ALLOW``).

Refused: private (RFC 1918, ULA), loopback, link-local (cloud metadata at 169.254.169.254),
reserved, multicast, unspecified, shared/CGNAT (100.64.0.0/10), and IPv6 forms that embed one of
those (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64). The checked address is what the
sender connects to (:func:`pinned_request` args), so a DNS answer that changes between the check
and the connection (rebinding) cannot move a delivery inside the network."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


class RefusedTarget(Exception):
    """A receiver that may not be reached; ``category`` is what the delivery log records."""

    def __init__(self, category: str, reason: str) -> None:
        super().__init__(reason)
        self.category = category
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Allow:
    """The operator's exceptions: host names (exact, case-insensitive) and networks."""

    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, text: str) -> Allow:
        """``"hooks.internal, 10.0.0.0/8, ::1"`` → the names and networks; raises ValueError."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if "/" in entry or any(c.isspace() for c in entry):
                    raise ValueError(f"not a host name or network: {entry!r}") from None
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def names(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def covers(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)


NOTHING_ALLOWED = Allow(frozenset(), ())


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in n for n in _NAT64) or (ip in _V4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """Whether ``ip`` is a public unicast address, also through any IPv4 it embeds."""
    if isinstance(ip, ipaddress.IPv6Address):
        v4 = _embedded_v4(ip)
        if v4 is not None:
            return is_public(v4)
    return (
        ip.is_global
        and not ip.is_multicast
        and not ip.is_reserved
        and not ip.is_unspecified
        and not (ip.version == 4 and ip in _CGNAT)
    )


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses ``host`` names (itself, for an IP literal); RefusedTarget("dns_error")."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise RefusedTarget("dns_error", f"the host {host!r} could not be resolved") from None
    # getaddrinfo's sockaddr[0] is always a str address; the scope id of link-local v6 goes.
    found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not found:
        raise RefusedTarget("dns_error", f"the host {host!r} has no address")
    return list(dict.fromkeys(found))


def check_registration(host: str, port: int, allow: Allow) -> None:
    """At registration: a host the operator names is trusted without resolving it now (it may
    resolve only where deliveries run); any other must resolve to allowed addresses."""
    if not allow.names(host):
        check_target(host, port, allow)


def check_target(host: str, port: int, allow: Allow) -> IPAddress:
    """The address to connect to for ``host``: every address it resolves to must be public or
    allowed (one bad answer refuses the host, so no answer order reaches inside)."""
    addresses = resolve(host, port)
    if allow.names(host):
        return addresses[0]
    for ip in addresses:
        if not is_public(ip) and not allow.covers(ip):
            raise RefusedTarget(
                "refused_address",
                f"the host {host!r} is or resolves to a private, loopback, link-local or "
                "reserved address; webhooks go only to public addresses unless the server's "
                "operator allows the host (TUNESMITH_WEBHOOK_ALLOW)",
            )
    return addresses[0]
