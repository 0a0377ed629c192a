"""The buyer's emails, each in plain text and HTML, in Simplified Chinese, English, or both.

An order with no language (`orders.lang` unset) gets both, Chinese first. Every link is the order
page `{shop}/o/{order_id}?token=…`. Everything shown is escaped in the HTML part.
"""

from dataclasses import dataclass
from datetime import datetime
from html import escape

from miaofa.gateways.money import to_major
from miaofa.lang import LANGS  # both, Chinese first


@dataclass(frozen=True)
class Email:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class OrderInfo:
    """What an email shows of an order (no key, no email address)."""

    order_id: str
    link: str
    product: str
    quantity: int
    amount_cents: int
    currency: str
    status: str = ""
    created_at: datetime | None = None


def order_link(shop_url: str, order_id: str, token: str) -> str:
    return f"{shop_url.rstrip('/')}/o/{order_id}?token={token}"


def langs_for(lang: str | None) -> tuple[str, ...]:
    return (lang,) if lang in LANGS else LANGS


def _money(cents: int, currency: str) -> str:
    try:
        return f"{to_major(cents, currency)} {currency}"
    except Exception:  # an unknown exponent must not cost the buyer their email
        return f"{cents} {currency} (minor units)"


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else ""


# One block of lines per language: (line, is_link). The HTML part is built from the same lines.
Line = tuple[str, str | None]  # text, optional href


def _render(subject: str, blocks: list[list[Line]]) -> Email:
    text_parts, html_parts = [], []
    for block in blocks:
        text_parts.append("\n".join(f"{line}\n{href}" if href and href != line else line for line, href in block))
        html_parts.append(
            "".join(
                f'<p><a href="{escape(href)}">{escape(line)}</a></p>'
                if href
                else (f"<p>{escape(line)}</p>" if line else "")
                for line, href in block
            )
        )
    text = "\n\n----\n\n".join(text_parts) + "\n"
    html = (
        '<!doctype html><html><body style="font-family:sans-serif;line-height:1.5">'
        + "<hr>".join(f"<div>{part}</div>" for part in html_parts)
        + "</body></html>"
    )
    return Email(subject, text, html)


def _subject(lang: str | None, zh: str, en: str) -> str:
    langs = langs_for(lang)
    return " / ".join(zh if one == "zh" else en for one in langs)


def delivery(order: OrderInfo, keys: list[str], lang: str | None) -> Email:
    blocks: list[list[Line]] = []
    for one in langs_for(lang):
        if one == "zh":
            blocks.append(
                [
                    (f"感谢您的购买！订单 {order.order_id}：{order.product} × {order.quantity}。", None),
                    ("您的卡密：", None),
                    *[(key, None) for key in keys],
                    ("查看订单：", None),
                    (order.link, order.link),
                ]
            )
        else:
            blocks.append(
                [
                    (f"Thank you for your order {order.order_id}: {order.product} × {order.quantity}.", None),
                    ("Your keys:", None),
                    *[(key, None) for key in keys],
                    ("Order page:", None),
                    (order.link, order.link),
                ]
            )
    return _render(_subject(lang, f"订单 {order.order_id} 的卡密", f"Your keys for order {order.order_id}"), blocks)


def coupon(order: OrderInfo, code: str, off: str, expires_at: datetime, lang: str | None) -> Email:
    blocks: list[list[Line]] = []
    for one in langs_for(lang):
        if one == "zh":
            blocks.append(
                [
                    (f"很抱歉，订单 {order.order_id} 的发货晚于承诺时间。", None),
                    (f"送您一张优惠券：{code}（{off}），有效期至 {_when(expires_at)}。", None),
                    ("查看订单：", None),
                    (order.link, order.link),
                ]
            )
        else:
            blocks.append(
                [
                    (f"We are sorry: order {order.order_id} was delivered later than promised.", None),
                    (f"Here is a coupon: {code} ({off}), valid until {_when(expires_at)}.", None),
                    ("Order page:", None),
                    (order.link, order.link),
                ]
            )
    return _render(
        _subject(lang, f"订单 {order.order_id} 的补偿优惠券", f"A coupon for order {order.order_id}"), blocks
    )


def refund(order: OrderInfo, lang: str | None) -> Email:
    amount = _money(order.amount_cents, order.currency)
    blocks: list[list[Line]] = []
    for one in langs_for(lang):
        if one == "zh":
            blocks.append(
                [
                    (f"订单 {order.order_id} 已退款：{amount}，原路退回。", None),
                    ("该订单的卡密已作废。", None),
                    ("查看订单：", None),
                    (order.link, order.link),
                ]
            )
        else:
            blocks.append(
                [
                    (f"Order {order.order_id} has been refunded: {amount}, to the way you paid.", None),
                    ("Its keys are no longer valid.", None),
                    ("Order page:", None),
                    (order.link, order.link),
                ]
            )
    return _render(_subject(lang, f"订单 {order.order_id} 已退款", f"Order {order.order_id} refunded"), blocks)


def lookup(found: list[OrderInfo], lang: str | None) -> Email:
    blocks: list[list[Line]] = []
    for one in langs_for(lang):
        lines: list[Line] = [
            ("您在本店的订单（最近 20 个）：", None)
            if one == "zh"
            else ("Your orders in our shop (the latest 20):", None)
        ]
        for order in found:
            summary = (
                f"{_when(order.created_at)} · {order.product} × {order.quantity} · "
                f"{_money(order.amount_cents, order.currency)} · {order.status}"
            )
            lines.append((summary, None))
            lines.append((order.link, order.link))
        lines.append(
            ("如果不是您本人请求的，请忽略本邮件。", None)
            if one == "zh"
            else ("If you did not ask for this, ignore this email.", None)
        )
        blocks.append(lines)
    return _render(_subject(lang, "您的订单链接", "Links to your orders"), blocks)
