"""Every string a merchant reads in the console, in English and Simplified Chinese. The language is
picked as on the buyer's pages (api/web/i18n.pick: ?lang=, the lang cookie, Accept-Language)."""

from api.web import i18n as web
from api.web.i18n import LANGS

STRINGS: dict[str, tuple[str, str]] = {  # key: (English, 简体中文)
    "brand": ("Miaofa console", "秒发 商家后台"),
    "nav.dashboard": ("Dashboard", "概览"),
    "nav.products": ("Products", "商品"),
    "nav.orders": ("Orders", "订单"),
    "nav.staff": ("Staff", "员工"),
    "nav.switch": ("中文", "English"),
    "nav.sign_out": ("Sign out", "退出"),
    "signin.title": ("Sign in", "登录"),
    "signin.token": ("Merchant token (owner or staff)", "商家令牌（店主或员工）"),
    "signin.help": (
        "Paste the token the platform gave you (it starts with mfm_). It is never shown again here.",
        "请粘贴平台发给您的令牌（以 mfm_ 开头）。此处不会再次显示。",
    ),
    "signin.submit": ("Sign in", "登录"),
    "signin.bad": ("That token is not a live merchant token.", "该令牌不是有效的商家令牌。"),
    "signin.out": ("You are signed out.", "您已退出登录。"),
    "dash.title": ("Dashboard", "概览"),
    "dash.today_orders": ("Orders today (UTC)", "今日订单（UTC）"),
    "dash.today_sales": ("Sales today (delivered)", "今日销售额（已发货）"),
    "dash.none": ("None", "无"),
    "dash.by_status": ("Orders by status", "按状态统计订单"),
    "dash.late": ("Late deliveries (last 7 days)", "超时发货（近 7 天）"),
    "dash.no_late": ("No late deliveries.", "没有超时发货。"),
    "dash.low_stock": ("Low stock", "库存不足"),
    "dash.no_low": ("Every active product has stock.", "所有在售商品库存充足。"),
    "dash.ledger": ("Balance / statements / withdrawals", "余额 / 对账单 / 提现"),
    "dash.ledger_soon": ("Coming with the ledger.", "将随账本功能上线。"),
    "products.title": ("Products", "商品"),
    "products.none": ("No products yet.", "暂无商品。"),
    "products.create": ("New product", "新建商品"),
    "products.edit": ("Edit", "编辑"),
    "products.keys": ("Keys", "卡密"),
    "products.saved": ("Saved.", "已保存。"),
    "products.created": ("Product created.", "商品已创建。"),
    "f.sku": ("SKU", "SKU"),
    "f.name": ("Name", "名称"),
    "f.description": ("Description", "描述"),
    "f.price": ("Price (minor units, e.g. 990 = 9.90)", "价格（最小单位，如 990 = 9.90）"),
    "f.currency": ("Currency", "币种"),
    "f.sla": ("Delivery SLA (seconds)", "发货时限（秒）"),
    "f.active": ("On sale", "在售"),
    "f.save": ("Save", "保存"),
    "f.create": ("Create", "创建"),
    "f.reason": ("Reason", "原因"),
    "stock.available": ("Available", "可售"),
    "stock.reserved": ("Reserved", "已预留"),
    "stock.sold": ("Sold", "已售"),
    "price": ("Price", "价格"),
    "active": ("On sale", "在售"),
    "inactive": ("Off sale", "已下架"),
    "keys.title": ("Keys of {name}", "{name} 的卡密"),
    "keys.import": ("Import keys from a text file (one key a line)", "从文本文件导入卡密（每行一个）"),
    "keys.start": ("Import", "导入"),
    "keys.progress": ("Imported {imported}, duplicates {duplicates}", "已导入 {imported}，重复 {duplicates}"),
    "keys.done": (
        "Done: imported {imported}, duplicates {duplicates}.",
        "完成：已导入 {imported}，重复 {duplicates}。",
    ),
    "keys.failed": ("The import stopped: {detail}", "导入中止：{detail}"),
    "keys.pick": ("Choose a file first.", "请先选择文件。"),
    "keys.hidden": (
        "Keys are never shown here. An order's keys can be revealed once from its page (audited).",
        "此处不显示卡密。订单的卡密可在订单页面单次显示（会记录审计）。",
    ),
    "keys.nojs": ("The import needs JavaScript.", "导入需要启用 JavaScript。"),
    "orders.title": ("Orders", "订单"),
    "orders.email": ("Buyer email", "买家邮箱"),
    "orders.status": ("Status", "状态"),
    "orders.product": ("Product", "商品"),
    "orders.from": ("From (date)", "起始日期"),
    "orders.to": ("To (date)", "截止日期"),
    "orders.any": ("Any", "全部"),
    "orders.search": ("Search", "搜索"),
    "orders.none": ("No orders match.", "没有符合条件的订单。"),
    "orders.id": ("Order", "订单"),
    "orders.amount": ("Amount", "金额"),
    "orders.created": ("Created", "创建时间"),
    "orders.quantity": ("Quantity", "数量"),
    "orders.paid": ("Paid", "付款时间"),
    "orders.delivered": ("Delivered", "发货时间"),
    "orders.gateway": ("Gateway", "支付方式"),
    "orders.sla": ("SLA", "时限"),
    "order.timeline": ("Timeline", "时间线"),
    "order.keys": ("Keys", "卡密"),
    "order.reveal": ("Reveal keys (audited)", "显示卡密（记录审计）"),
    "order.revealed": ("Shown once; this reveal is in the audit log.", "仅显示一次；本次查看已记入审计日志。"),
    "order.no_keys": ("This order holds no keys.", "此订单没有卡密。"),
    "order.actions": ("Actions", "操作"),
    "order.refund": ("Refund", "退款"),
    "order.resend": ("Resend", "重发"),
    "order.cancel": ("Cancel", "取消"),
    "order.done": ("Done: the order is now {status}.", "完成：订单现在为 {status}。"),
    "staff.title": ("Staff tokens", "员工令牌"),
    "staff.name": ("Name (a-z, 0-9, . _ -)", "名称（a-z、0-9、. _ -）"),
    "staff.role": ("Role", "角色"),
    "staff.last_used": ("Last used", "最近使用"),
    "staff.add": ("Add staff token", "添加员工令牌"),
    "staff.revoke": ("Revoke", "吊销"),
    "staff.new": (
        "The new token for {name}. Copy it now: it is not shown again.",
        "{name} 的新令牌。请立即复制：它不会再次显示。",
    ),
    "staff.revoked": ("{name}'s token is revoked.", "{name} 的令牌已吊销。"),
    "stage.risk": ("Risk checks", "风控检查"),
    "err.title": ("Something is not right", "出现问题"),
    "err.not_found": ("Not found.", "未找到。"),
    "err.forbidden": ("Only the shop's owner may open this.", "只有店主可以打开此页面。"),
    "err.csrf_refused": (
        "This form has expired or came from another site. Reload the page and try again.",
        "此表单已过期或来自其他网站。请刷新页面后重试。",
    ),
    "err.invalid_input": ("Please check the form: {detail}", "请检查表单：{detail}"),
    "err.generic": ("This did not work: {detail}", "操作未成功：{detail}"),
    "err.back": ("Back to the dashboard", "返回概览"),
}


def catalogue(lang: str) -> dict[str, str]:
    """The console's strings over the buyer pages' (their order statuses and timeline stages)."""
    index = LANGS.index(lang) if lang in LANGS else 0
    return {**web.catalogue(lang), **{key: pair[index] for key, pair in STRINGS.items()}}


class Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.strings = catalogue(lang)

    def __call__(self, key: str, **values: object) -> str:
        text = self.strings.get(key, key)
        return text.format(**values) if values else text

    def status(self, status: str) -> str:
        return self.strings.get(f"status.{status}", status)

    def stage(self, stage: str) -> str:
        return self.strings.get(f"stage.{stage}", stage)
