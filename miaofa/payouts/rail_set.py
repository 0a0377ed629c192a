"""The payout rails this deployment offers, built from the settings: the simulator's when it has a
secret, Alipay's 单笔转账 when PAYOUT_ALIPAY is on and the platform's Alipay app is configured, WeChat's
商家转账 when PAYOUT_WECHAT is on and the platform's WeChat Pay merchant is, Stripe Connect transfers
when PAYOUT_STRIPE is on and the platform's Stripe account is (each transfer product is signed for
separately, so none is on by default)."""

from miaofa.payouts.alipay_rail import AlipayRail
from miaofa.payouts.rails import PayoutRail, SimulatorRail
from miaofa.payouts.stripe_rail import StripeRail
from miaofa.payouts.wechat_rail import WechatRail
from miaofa.settings import Settings


def offered(settings: Settings) -> tuple[str, ...]:
    """The rails a destination may name here."""
    rails = []
    if settings.sim_secret:
        rails.append("simulator")
    if settings.payout_alipay and settings.alipay.configured():
        rails.append("alipay")
    if settings.payout_wechat and settings.wechat.configured():
        rails.append("wechat")
    if settings.payout_stripe and settings.stripe.configured():
        rails.append("stripe")
    return tuple(rails)


def build_rails(settings: Settings) -> dict[str, PayoutRail]:
    timeout = settings.payout_rail_timeout_seconds
    rails: dict[str, PayoutRail] = {}
    for name in offered(settings):
        if name == "simulator":
            rails[name] = SimulatorRail(settings.sim_url, settings.sim_secret, timeout)
        elif name == "alipay":
            rails[name] = AlipayRail(settings.alipay)  # its own client, closed with it
        elif name == "wechat":
            report = dict(item.split("=", 1) for item in settings.payout_wechat_scene_report.split(";") if "=" in item)
            rails[name] = WechatRail(settings.wechat, settings.payout_wechat_scene_id, report)
        elif name == "stripe":
            rails[name] = StripeRail(settings.stripe)
    return rails
