"""The gateways this shop is configured for, by name.

The simulator is a gateway only where it is configured on purpose: with `MIAOFA_SIM_SECRET` set
(`miaofa up` generates one for the demo; staging sets it by hand). Without a secret it does not
exist, so no order can be created for it and no notify for it is accepted.
"""

import httpx

from miaofa.gateways.base import Gateway
from miaofa.gateways.simulator import SimulatorGateway
from miaofa.settings import Settings


def build_gateways(settings: Settings, client: httpx.AsyncClient | None = None) -> dict[str, Gateway]:
    gateways: dict[str, Gateway] = {}
    if settings.sim_secret:
        gateways["simulator"] = SimulatorGateway(settings.sim_url, settings.sim_merchant_id, settings.sim_secret,
                                                 client=client)
    return gateways
