"""Every string a buyer reads, in English and Simplified Chinese, and how a page picks its language.

The same catalogue feeds the templates and, as JSON in the page, the scripts (inline errors, live
status): one place to add a string in both languages.
"""

from collections.abc import Mapping

from starlette.requests import Request

from miaofa.gateways.money import to_major
from miaofa.lang import preferred

LANGS = ("en", "zh")  # the order of each entry in STRINGS
COOKIE = "lang"
SYMBOLS = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£"}

STRINGS: dict[str, tuple[str, str]] = {  # key: (English, 简体中文)
    "brand": ("Miaofa", "秒发"),
    "tagline": ("Digital keys, delivered the moment you pay", "卡密自动发货，付款即到"),
    "nav.shop": ("Shop", "商店"),
    "nav.lookup": ("Find my orders", "查找订单"),
    "nav.switch": ("中文", "English"),
    "shop.title": ("Shop", "商店"),
    "shop.search": ("Search products", "搜索商品"),
    "shop.search_button": ("Search", "搜索"),
    "shop.none": ("No products yet.", "暂无商品。"),
    "shop.no_match": ("No product matches your search.", "没有符合搜索的商品。"),
    "shop.in_stock": ("{n} in stock", "库存 {n}"),
    "shop.sold_out": ("Sold out", "已售罄"),
    "shop.buy": ("Buy", "购买"),
    "shop.email": ("Email (the keys are sent here)", "邮箱（卡密将发送到此）"),
    "shop.quantity": ("Quantity", "数量"),
    "shop.gateway": ("Pay with", "支付方式"),
    "shop.coupon": ("Coupon code (optional)", "优惠码（可选）"),
    "shop.suspended": (
        "This shop is not taking orders right now. Orders already placed are still delivered.",
        "本店暂停接单。已下的订单仍会正常发货。",
    ),
    "shop.other_shops": ("More shops", "更多店铺"),
    "shop.submit": ("Place order", "提交订单"),
    "shop.placing": ("Placing your order…", "正在下单…"),
    "shop.replayed": (
        "This order was already placed. Its link is in the first answer; or find it by email.",
        "此订单已提交过。请使用首次打开的订单链接，或通过邮箱查找订单。",
    ),
    "gw.simulator": ("Test payment (simulator)", "模拟支付（测试）"),
    "gw.alipay": ("Alipay", "支付宝"),
    "gw.wechatpay": ("WeChat Pay", "微信支付"),
    "gw.stripe": ("Card (Stripe)", "银行卡（Stripe）"),
    "gw.epay": ("Epay", "易支付"),
    "gw.epusdt": ("USDT", "USDT"),
    "err.sold_out": (
        "Sorry, this product is sold out (or not enough left for that quantity).",
        "抱歉，该商品已售罄（或库存不足所选数量）。",
    ),
    "err.email": (
        "Please enter one valid email address, like name@example.com.",
        "请输入一个有效的邮箱地址，例如 name@example.com。",
    ),
    "err.quantity": ("Please choose a quantity from 1 to {max}.", "请选择 1 到 {max} 之间的数量。"),
    "err.invalid_input": ("Please check the form: {detail}", "请检查表单：{detail}"),
    "err.unknown_product": ("This product is no longer sold.", "该商品已下架。"),
    "err.unknown_gateway": ("This payment method is not available.", "该支付方式不可用。"),
    "err.too_many_requests": (
        "Too many attempts. Please wait {s} seconds and try again.",
        "操作过于频繁，请 {s} 秒后再试。",
    ),
    "err.busy": (
        "Many buyers are checking out right now. Nothing was reserved yet: please try again in {s} seconds.",
        "当前下单人数较多，尚未为您锁定库存，请 {s} 秒后再试。",
    ),
    "err.too_many_open_orders": (
        "You already have unpaid orders. Pay or wait for them to expire first.",
        "您有未支付的订单，请先支付或等待其过期。",
    ),
    "err.quantity_limit": ("That is more than one buyer may take of this product.", "超出每位买家的限购数量。"),
    "err.forbidden": ("This order is not allowed.", "此订单不被允许。"),
    "err.email_blocked": (
        "This email address cannot place orders here. Contact support if this is a mistake.",
        "该邮箱无法在本店下单。如有误会请联系客服。",
    ),
    "err.network_blocked": (
        "Orders from your network are not accepted. Contact support if this is a mistake.",
        "不接受来自您所在网络的订单。如有误会请联系客服。",
    ),
    "err.device_blocked": (
        "Orders from this device are not accepted. Contact support if this is a mistake.",
        "不接受来自此设备的订单。如有误会请联系客服。",
    ),
    "err.order_refused": (
        "This order cannot be accepted. Contact support if this is a mistake.",
        "此订单无法受理。如有误会请联系客服。",
    ),
    "err.coupon_not_found": ("Unknown coupon code.", "优惠码不存在。"),
    "err.merchant_suspended": ("This shop is not taking orders right now.", "本店暂停接单。"),
    "err.unknown_merchant": ("This shop does not exist.", "该店铺不存在。"),
    "err.coupon_used": ("This coupon has already been used.", "该优惠码已被使用。"),
    "err.coupon_expired": ("This coupon has expired.", "该优惠码已过期。"),
    "err.coupon_currency": ("This coupon is for another currency.", "该优惠码不适用于此币种。"),
    "err.idempotency_key_reused": ("Please reload the page and try again.", "请刷新页面后重试。"),
    "err.gateway_unavailable": (
        "The payment service does not answer right now. Please try again shortly.",
        "支付服务暂时无响应，请稍后再试。",
    ),
    "err.unavailable": ("The shop is busy. Please try again in a moment.", "系统繁忙，请稍后再试。"),
    "err.network": (
        "Could not reach the shop. Check your connection and try again.",
        "无法连接商店，请检查网络后重试。",
    ),
    "err.generic": ("Something went wrong. Please try again.", "出错了，请重试。"),
    "err.csrf_refused": (
        "This form has expired or was sent from another site. Please submit it again.",
        "表单已过期或来自其他网站，请重新提交。",
    ),
    "order.title": ("Order {id}", "订单 {id}"),
    "order.product": ("Product", "商品"),
    "order.amount": ("Amount", "金额"),
    "order.status": ("Status", "状态"),
    "order.pay_title": ("Pay to receive your keys", "付款后立即发货"),
    "order.pay_before": ("Pay before {at}.", "请在 {at} 前完成付款。"),
    "order.pay_now": ("Pay now", "立即付款"),
    "order.scan": ("Or scan with your phone", "或用手机扫码"),
    "order.i_paid": ("I have paid", "我已付款"),
    "order.checking": ("Asking the payment service…", "正在向支付服务查询…"),
    "order.not_paid_yet": (
        "The payment service has not seen your payment yet. It can take a moment.",
        "支付服务尚未收到您的付款，可能需要片刻。",
    ),
    "order.paid_seen": ("Payment confirmed. Your keys are on their way.", "已确认付款，正在发货。"),
    "order.keys": ("Your keys", "您的卡密"),
    "order.copy": ("Copy", "复制"),
    "order.copied": ("Copied", "已复制"),
    "order.coupon": (
        "Sorry for the wait. Your coupon: {code}, {off}, valid until {until}.",
        "抱歉让您久等。您的优惠码：{code}，{off}，有效期至 {until}。",
    ),
    "order.percent_off": ("{n}% off", "{n}% 折扣"),
    "order.amount_off": ("{amount} off", "立减 {amount}"),
    "order.timeline": ("Progress", "进度"),
    "order.live": ("This page updates by itself.", "本页面会自动更新。"),
    "order.keep_link": (
        "Keep this page's link: it is the only way to see your keys without the email.",
        "请保存本页链接：没有邮件时，这是查看卡密的唯一途径。",
    ),
    "status.awaiting_payment": ("Awaiting payment", "等待付款"),
    "status.in_review": ("Under review", "审核中"),
    "status.paid": ("Paid, delivering", "已付款，发货中"),
    "status.delivered": ("Delivered", "已发货"),
    "status.delivery_failed": ("Delivery failed, refunding", "发货失败，退款中"),
    "status.expired": ("Expired", "已过期"),
    "status.cancelled": ("Cancelled", "已取消"),
    "status.rejected": ("Rejected", "已拒绝"),
    "status.refunded": ("Refunded", "已退款"),
    "msg.in_review": (
        "Your order is being reviewed. This page shows the decision as soon as it is made; keep its link.",
        "您的订单正在审核。审核结果会立即显示在本页，请保存本页链接。",
    ),
    "msg.paid": ("Payment received. Your keys appear here in a moment.", "已收到付款，卡密即将显示在此。"),
    "msg.delivered": ("Done. Your keys are below and were emailed to you.", "已完成。卡密如下，并已发送到您的邮箱。"),
    "msg.delivery_failed": (
        "We could not deliver this order. Your payment is being refunded.",
        "此订单无法发货，您的付款正在退回。",
    ),
    "msg.expired": (
        "The payment time ran out, nothing was charged. If you paid anyway, the payment is "
        "delivered or refunded automatically.",
        "付款时间已过，未扣款。如您仍已付款，系统会自动发货或退款。",
    ),
    "msg.cancelled": ("This order was cancelled. Nothing is owed.", "此订单已取消，无需付款。"),
    "msg.rejected": ("This order was not accepted. Any payment is refunded.", "此订单未被接受，已付款项将退回。"),
    "msg.refunded": (
        "This order was refunded. The money goes back the way you paid.",
        "此订单已退款，款项将原路退回。",
    ),
    "stage.created": ("Order placed", "订单已创建"),
    "stage.reserved": ("Stock reserved", "库存已锁定"),
    "stage.coupon_redeemed": ("Coupon applied", "已使用优惠码"),
    "stage.payment_created": ("Payment opened", "已创建支付"),
    "stage.notified": ("Payment service notified us", "收到支付通知"),
    "stage.polled": ("Payment found by our check", "主动查询到付款"),
    "stage.polled_backup": ("Payment found by our check", "主动查询到付款"),
    "stage.checked": ("Payment found when you asked", "应您请求查询到付款"),
    "stage.paid_at_close": ("Payment found at closing", "关单时查询到付款"),
    "stage.polled_late": ("Late payment found", "查询到延迟付款"),
    "stage.reconciled": ("Payment found by reconciliation", "对账发现付款"),
    "stage.free": ("Free order", "免费订单"),
    "stage.paid": ("Paid", "已付款"),
    "stage.delivered": ("Keys delivered", "卡密已发货"),
    "stage.email_sent": ("Email sent", "邮件已发送"),
    "stage.email_skipped": ("Email not sent", "未发送邮件"),
    "stage.email_failed": ("Email could not be sent", "邮件发送失败"),
    "stage.coupon": ("Coupon issued for the wait", "已补偿优惠码"),
    "stage.resent": ("Sent again", "已重新发送"),
    "stage.reserved_again": ("Stock reserved again", "已重新锁定库存"),
    "stage.paid_after_expiry": ("Paid after the time ran out", "超时后付款"),
    "stage.close_failed": ("Closing the payment failed", "关闭支付失败"),
    "stage.close_unsupported": ("The payment stays open at the gateway", "支付渠道不支持关闭订单"),
    "stage.stray_payment_refunded": ("An extra payment, refunded", "多余付款，已退款"),
    "stage.stray_payment_refund_by_hand": ("An extra payment, to be refunded by hand", "多余付款，将人工退款"),
    "stage.refund_by_hand": ("Refund to be sent by hand", "退款将由人工办理"),
    "stage.review_approved": ("Approved after review", "审核通过"),
    "stage.review_rejected": ("Not approved after review", "审核未通过"),
    "stage.review_timed_out": ("Review not finished in time", "审核超时"),
    "stage.expired": ("Expired", "已过期"),
    "stage.cancelled": ("Cancelled", "已取消"),
    "stage.rejected": ("Rejected", "已拒绝"),
    "stage.refunded": ("Refunded", "已退款"),
    "stage.in_review": ("Held for review", "等待审核"),
    "stage.delivery_failed": ("Delivery failed", "发货失败"),
    "notfound.title": ("Order not found", "未找到订单"),
    "notfound.text": (
        "This link is not valid: check that you copied the whole link from your email.",
        "此链接无效：请确认您完整复制了邮件中的链接。",
    ),
    "lookup.title": ("Find my orders", "查找我的订单"),
    "lookup.intro": (
        "Lost the link to an order? Enter the email you ordered with and we email you the links.",
        "找不到订单链接？输入下单时使用的邮箱，我们会把订单链接发送给您。",
    ),
    "lookup.email": ("Email", "邮箱"),
    "lookup.submit": ("Email me my order links", "发送订单链接"),
    "lookup.sending": ("Sending…", "正在发送…"),
    "lookup.sent": (
        "If there are orders for this address, we have emailed links to it.",
        "如果该邮箱有订单，我们已将订单链接发送到该邮箱。",
    ),
    "return.title": ("Back from payment", "支付返回"),
    "return.order": ("Order", "订单"),
    "return.text": (
        "Your keys are on your order page, which opens from the link in the email we sent you (or from "
        "the browser you ordered in). This page shows only the status. The email comes once the payment "
        "is confirmed; if it does not, have the links sent again.",
        "卡密显示在订单页面：请打开我们发送给您的邮件中的链接（或使用您下单时的浏览器）。本页面只显示订单状态。"
        "付款确认后我们会发送邮件；如未收到，可以重新发送订单链接。",
    ),
}


def pick(request: Request) -> str:
    """`?lang=` (the switch), then the `lang` cookie, then Accept-Language (miaofa.lang, as the emails
    read it), else English."""
    for chosen in (request.query_params.get("lang"), request.cookies.get(COOKIE)):
        if chosen in LANGS:
            return chosen
    return preferred(request.headers.get("accept-language")) or "en"


def catalogue(lang: str) -> dict[str, str]:
    index = LANGS.index(lang) if lang in LANGS else 0
    return {key: pair[index] for key, pair in STRINGS.items()}


class Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.strings = catalogue(lang)

    def __call__(self, key: str, **values: object) -> str:
        text = self.strings.get(key, key)
        return text.format(**values) if values else text

    def stage(self, stage: str) -> str | None:
        """A timeline stage in the buyer's words; None for a stage buyers do not see. Only the stages
        listed here are shown: internal ones (risk, reconcile, a stray payment's review …) never are."""
        return self.strings.get(f"stage.{stage}")

    def error(self, code: str, values: Mapping[str, object] | None = None) -> str:
        text = self.strings.get(f"err.{code}") or self.strings["err.generic"]
        return text.format(**(values or {}))


def money(minor: int, currency: str) -> str:
    """990 CNY → "¥9.90"; 500 JPY → "500 JPY"."""
    amount = to_major(minor, currency)
    symbol = SYMBOLS.get(currency.upper())
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"
