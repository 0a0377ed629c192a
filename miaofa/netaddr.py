"""Addresses and networks as the settings write them: "10.0.0.0/8, ::1"."""

import ipaddress
import socket
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=32)
def networks(text: str) -> tuple[Network, ...]:
    """ "10.0.0.0/8, ::1" → networks (the settings validator has already refused bad ones)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def within(ip: str, nets: tuple[Network, ...]) -> bool:
    """Whether the address is in one of the networks; an IPv4-mapped IPv6 address counts as its IPv4 one."""
    if not nets:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in nets)


def networks_problem(text: str) -> str | None:
    """Why "10.0.0.0/8, ::1" is not a list of addresses and networks, or None."""
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            return f"{part!r} is not an address or network (e.g. 10.0.0.0/8)"
    return None


def loopback_host(host: str) -> bool:
    """Whether a URL's host is this machine: localhost, 127.0.0.0/8 or ::1 (also IPv4-mapped)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


# ---- where a webhook may go ------------------------------------------------------------------

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
PUBLIC_ONLY = (
    "must reach a public address, not a loopback, private, link-local, multicast or metadata one"
    " (MIAOFA_WEBHOOK_ALLOW_NETWORKS may allow a network)"
)
# Names that are never the merchant's: this machine, and the clouds' instance metadata services.
_INTERNAL_NAMES = {
    "localhost": "127.0.0.1",
    "metadata": "169.254.169.254",
    "metadata.google.internal": "169.254.169.254",
    "metadata.goog": "169.254.169.254",
    "instance-data": "169.254.169.254",
    "instance-data.ec2.internal": "169.254.169.254",
}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_LOOSE_IPV4 = frozenset("0123456789abcdefxABCDEFX.")


def literal_address(host: str) -> Address | None:
    """The address a URL's host spells, as a resolver would read it; None for a name.

    Beyond dotted quads, the old inet_aton forms count too: 2130706433, 0x7f.1 and 017700000001 are
    all 127.0.0.1 to getaddrinfo, so they are to us."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and set(host) <= _LOOSE_IPV4 and any(ch.isdigit() for ch in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded(address: Address) -> list[Address]:
    """The address and the IPv4 address it carries (mapped, 6to4, NAT64, IPv4-compatible), if any."""
    found: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        elif address.sixtofour is not None:
            found.append(address.sixtofour)
        elif address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _public(address: Address) -> bool:
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    )


def webhook_address_problem(ip: str | Address, allow: str = "") -> str | None:
    """Why a webhook must not connect to this address, or None (allowed networks always may)."""
    try:
        address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    except ValueError:
        return PUBLIC_ONLY
    inside = _embedded(address)
    allowed = networks(allow)
    if any(a in net for a in inside for net in allowed if a.version == net.version):
        return None
    return None if all(_public(a) for a in inside) else PUBLIC_ONLY


def webhook_host_problem(host: str, allow: str = "") -> str | None:
    """Why a webhook URL's host is refused without asking DNS (an address in any spelling, this
    machine, a metadata service), or None: a name is checked again, resolved, at every send."""
    name = host.strip("[]").rstrip(".").lower()
    if not name:
        return "must name a host"
    if name.endswith(".localhost"):
        name = "localhost"
    address = literal_address(name) if name not in _INTERNAL_NAMES else ipaddress.ip_address(_INTERNAL_NAMES[name])
    return webhook_address_problem(address, allow) if address is not None else None
