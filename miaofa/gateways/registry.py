"""The gateways this shop is configured for, by name."""

import httpx

from miaofa.gateways.base import Gateway
from miaofa.gateways.simulator import SimulatorGateway
from miaofa.settings import Settings


def build_gateways(settings: Settings, client: httpx.AsyncClient | None = None) -> dict[str, Gateway]:
    return {
        "simulator": SimulatorGateway(settings.sim_url, settings.sim_merchant_id, settings.sim_secret, client=client),
    }

