"""Who the client is: the TCP peer, or — only behind a proxy we were told to trust — the address that
proxy saw, from X-Forwarded-For.

The header is client input: anyone can send `X-Forwarded-For: 1.2.3.4`. It is read only when the
peer is one of MIAOFA_TRUSTED_PROXIES (none by default), right to left, skipping our own proxies;
the first address not among them is the client. (uvicorn must not rewrite the peer itself:
`proxy_headers=False`, or it would trust any local process.)
"""

import ipaddress

from fastapi import Request

from miaofa.netaddr import networks, within


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
