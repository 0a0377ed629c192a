"""The simulator's pay page: what a buyer sees at a gateway (amount, merchant, a QR code to pay
from a phone, pay or fail), in English and Chinese side by side. Plain forms, no script."""

import base64
import hashlib
import html

import segno

from miaofa.simulator.books import Payment

_STYLE = """
body{margin:0;font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei","Noto Sans CJK SC",sans-serif;
background:#eef2f6;color:#1b1f24}
.sheet{max-width:420px;margin:1.5rem auto;background:#fff;border-radius:14px;overflow:hidden;
box-shadow:0 2px 12px rgba(0,0,0,.08)}
.bar{background:#1677ff;color:#fff;padding:.9rem 1.2rem;font-weight:600}
.body{padding:1.2rem;text-align:center}
.merchant{color:#5b6470;font-size:.9rem;margin:0}
.subject{margin:.3rem 0 0;font-size:1rem;overflow-wrap:anywhere}
.amount{font-size:2.2rem;font-weight:700;margin:.4rem 0}
.qr svg{width:180px;height:180px}
.qr p{color:#5b6470;font-size:.85rem;margin:.2rem 0 1rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem;text-align:left;font-size:.85rem;
color:#5b6470;margin:0 0 1rem}
dd{margin:0;overflow-wrap:anywhere}
form{margin:.5rem 0}
button,.back{display:block;width:100%;font:inherit;font-size:1.05rem;padding:.75rem;border-radius:10px;
cursor:pointer;text-decoration:none;box-sizing:border-box}
.pay{background:#1677ff;border:1px solid #1677ff;color:#fff;font-weight:600}
.fail{background:#fff;border:1px solid #d0d5dc;color:#b3261e}
.back{border:1px solid #d0d5dc;color:#1677ff}
.status{font-weight:600;margin:1rem 0}
.note{color:#8a929c;font-size:.8rem;margin-top:1rem}
"""
STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
# No form-action: the pay form's answer redirects the browser to the shop, another origin.
CSP = f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; img-src data:; base-uri 'none'; frame-ancestors 'none'"

_STATUS = {
    "pending": "Waiting for payment · 待支付",
    "paid": "Paid · 已支付",
    "closed": "Closed · 已关闭",
    "refunded": "Refunded · 已退款",
}


def money(cents: int, currency: str) -> str:
    return f"{cents // 100}.{cents % 100:02d} {currency}"


def pay_page(payment: Payment, pay_url: str) -> str:
    e = html.escape
    action = f"/pay/{e(payment.payment_id)}"
    if payment.status == "pending":
        qr = segno.make(pay_url, error="m").svg_inline(scale=4, border=2, omitsize=True)
        actions = (
            f'<div class="qr">{qr}<p>Scan to pay on your phone · 手机扫码支付</p></div>'
            f'<form method="post" action="{action}"><button class="pay" type="submit">Pay · 确认支付</button></form>'
            f'<form method="post" action="{action}/fail"><button class="fail" type="submit">'
            f"Fail (decline) · 支付失败</button></form>"
        )
    else:
        back = (
            f'<a class="back" href="{e(payment.return_url)}">Back to the shop · 返回商户</a>'
            if payment.return_url
            else ""
        )
        actions = f'<p class="status">{e(_STATUS.get(payment.status, payment.status))}</p>{back}'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Pay {e(money(payment.amount_cents, payment.currency))} · Simulator</title><style>{_STYLE}</style></head>
<body><div class="sheet"><div class="bar">Payment simulator · 模拟收银台</div><div class="body">
<p class="merchant">{e(payment.merchant_id)}</p>
<p class="subject">{e(payment.subject)}</p>
<p class="amount">{e(money(payment.amount_cents, payment.currency))}</p>
{actions}
<dl><dt>Order · 订单</dt><dd>{e(payment.order_id)}</dd><dt>Payment · 流水</dt><dd>{e(payment.payment_id)}</dd>
<dt>Status · 状态</dt><dd>{e(_STATUS.get(payment.status, payment.status))}</dd></dl>
<p class="note">A test gateway: no money moves. 测试网关，不产生真实扣款。</p>
</div></div></body></html>
"""
