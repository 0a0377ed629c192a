"""The gateways this shop is configured for, by name.

The simulator is a gateway only where it is configured on purpose: with `MIAOFA_SIM_SECRET` set
(`miaofa up` generates one for the demo; staging sets it by hand). Without a secret it does not
exist, so no order can be created for it and no notify for it is accepted.

A real gateway is on when its settings are complete (miaofa/gateways/config.py); its module
offers `build(settings, client)` and is imported only then.
"""

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from miaofa.gateways.base import Gateway
from miaofa.gateways.simulator import SimulatorGateway

if TYPE_CHECKING:  # the settings hold the gateways' sections (miaofa/gateways/config.py)
    from miaofa.settings import Settings


# What each gateway's own record offers reconciliation (docs/gateway-bills.md).
BILLS = {
    "simulator": "statement API, live",
    "alipay": "trade bill by day, out the next morning",
    "wechat": "trade bill by day, out after 10:00 the next day",
    "stripe": "balance transactions, live",
    "epay": "none: its order list is unsigned, only a notify proves a payment",
    "epusdt": "none: no order list; only a notify proves a payment",
}


@dataclass(frozen=True)
class GatewayStatus:
    name: str
    enabled: bool
    missing: tuple[str, ...]  # the settings that would turn it on


def build_gateways(settings: "Settings", client: httpx.AsyncClient | None = None) -> dict[str, Gateway]:
    gateways: dict[str, Gateway] = {}
    if settings.sim_secret:
        gateways["simulator"] = SimulatorGateway(
            settings.sim_url, settings.sim_merchant_id, settings.sim_secret, client=client
        )
    for section in settings.gateway_settings():
        if section.configured():
            module = importlib.import_module(f"miaofa.gateways.{section.name}")
            gateways[section.name] = module.build(section, client)
    return gateways


def gateway_statuses(settings: "Settings") -> list[GatewayStatus]:
    statuses = [
        GatewayStatus("simulator", bool(settings.sim_secret), () if settings.sim_secret else ("MIAOFA_SIM_SECRET",))
    ]
    for section in settings.gateway_settings():
        statuses.append(GatewayStatus(section.name, section.configured(), tuple(section.missing())))
    return statuses
