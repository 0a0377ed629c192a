"""Addresses and networks as the settings write them: "10.0.0.0/8, ::1"."""

import ipaddress
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
