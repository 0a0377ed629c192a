"""Who the client is: the TCP peer, or — only behind a proxy we were told to trust — the address that
proxy saw, from X-Forwarded-For.

The header is client input: anyone can send `X-Forwarded-For: 1.2.3.4`. It is read only when the
peer is one of MIAOFA_TRUSTED_PROXIES (none by default), right to left, skipping our own proxies;
the first address not among them is the client. (uvicorn must not rewrite the peer itself:
`proxy_headers=False`, or it would trust any local process.)
"""

import ipaddress
from functools import lru_cache

from fastapi import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=32)
def networks(text: str) -> tuple[Network, ...]:
    """"10.0.0.0/8, ::1" → networks (the settings validator has already refused bad ones)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def within(ip: str, nets: tuple[Network, ...]) -> bool:
    if not nets:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in nets)


def client_ip(request: Request, trusted_proxies: str) -> str:
    peer = request.client.host if request.client else ""
    trusted = networks(trusted_proxies)
    if not within(peer, trusted):
        return peer
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # garbage our proxy passed on: the last address we can vouch for
        if not within(hop, trusted):
            return hop
        peer = hop
    return peer
