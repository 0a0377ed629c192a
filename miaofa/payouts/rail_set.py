"""The payout rails this deployment offers, built from the settings: the simulator's when it has a
secret, Alipay's 单笔转账 when PAYOUT_ALIPAY is on and the platform's Alipay app is configured (the
transfer product is signed for separately at Alipay, so it is never on by default)."""

from miaofa.payouts.alipay_rail import AlipayRail
from miaofa.payouts.rails import PayoutRail, SimulatorRail
from miaofa.settings import Settings


def offered(settings: Settings) -> tuple[str, ...]:
    """The rails a destination may name here."""
    rails = []
    if settings.sim_secret:
        rails.append("simulator")
    if settings.payout_alipay and settings.alipay.configured():
        rails.append("alipay")
    return tuple(rails)


def build_rails(settings: Settings) -> dict[str, PayoutRail]:
    timeout = settings.payout_rail_timeout_seconds
    rails: dict[str, PayoutRail] = {}
    for name in offered(settings):
        if name == "simulator":
            rails[name] = SimulatorRail(settings.sim_url, settings.sim_secret, timeout)
        elif name == "alipay":
            rails[name] = AlipayRail(settings.alipay)  # its own client, closed with it
    return rails
