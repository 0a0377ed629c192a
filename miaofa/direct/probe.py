"""A harmless call that tests a merchant's credentials before they are saved: the query of an order
nobody made. An answer of "no such payment" means the gateway took our signature; a refusal of the
signature or the key means the credentials are wrong. Messages name the gateway, never a value.
"""

import secrets
from typing import Literal

import httpx

import miaofa.gateways.epay  # noqa: F401  (its filter takes the key out of httpx's request log)
from miaofa.errors import InvalidInput, Unavailable
from miaofa.gateways.base import Gateway, GatewayError, GatewayRefused, Unsupported

Checked = Literal["checked", "unchecked"]
# Words of our adapters' own error messages that say the gateway refused who we are.
# Alipay answers a refused app id or signature with an `error_response` (isv.*).
_REFUSED_US = ("http 401", "http 403", "sign", "unauthorized", "auth", "key", "error_response", "isv.")


def _probe_ids(gateway: str) -> tuple[str, str]:
    token = secrets.token_hex(8)
    payment_id = {"simulator": f"sim_probe{token}", "stripe": f"cs_test_probe{token}"}.get(gateway, "")
    return payment_id, f"probe{token}"


def bad_credentials(gateway: str) -> InvalidInput:
    return InvalidInput(f"{gateway} refused these credentials", error="bad_credentials")


async def probe(gateway: str, adapter: Gateway, epay: tuple[str, str, str] | None = None) -> Checked:
    """epay: (api_url, pid, key), asked directly: its adapter's query hides a refused key."""
    if epay is not None:
        return await _probe_epay(*epay)
    if gateway == "epusdt":
        return "unchecked"  # no call of epusdt's is both authenticated and harmless
    payment_id, order_id = _probe_ids(gateway)
    try:
        await adapter.query(payment_id, order_id, "primary")
    except Unsupported:
        return "unchecked"
    except GatewayRefused:
        raise bad_credentials(gateway) from None
    except GatewayError as exc:
        if any(word in str(exc).lower() for word in _REFUSED_US):
            raise bad_credentials(gateway) from None
        raise Unavailable(f"{gateway} did not answer; try again", error="gateway_unreachable") from None
    return "checked"


async def _probe_epay(api_url: str, pid: str, key: str) -> Checked:
    base = api_url if api_url.endswith("/") else api_url + "/"
    params = {"act": "order", "pid": pid, "key": key, "out_trade_no": _probe_ids("epay")[1]}
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(base + "api.php", params=params)  # the URL holds the key: not logged
        data = response.json()
    except (httpx.HTTPError, ValueError):
        raise Unavailable("epay did not answer; try again", error="gateway_unreachable") from None
    if not isinstance(data, dict):
        raise Unavailable("epay answered something else; try again", error="gateway_unreachable")
    # -2 / "KEY校验失败": the operator refused the key (a missing order is -1, or 0).
    if str(data.get("code")) == "-2" or "KEY" in str(data.get("msg", "")).upper():
        raise bad_credentials("epay")
    return "checked"
