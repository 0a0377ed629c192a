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
    "nav.money": ("Money", "资金"),
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
    "dash.ledger_open": ("Balances, held amounts and the ledger", "余额、冻结金额与账本"),
    "money.title": ("Money", "资金"),
    "money.suspended": (
        "The platform suspended this shop: {reason} It takes no new orders; "
        "open orders finish and its money stays its own.",
        "平台已暂停本店：{reason} 暂不接受新订单；进行中的订单照常完成，资金仍归本店所有。",
    ),
    "money.help": (
        "Every amount below is read from the shop's double-entry ledger; nothing is estimated.",
        "以下每个金额均来自本店的复式记账账本，没有任何估算。",
    ),
    "money.pending": ("Pending (on hold)", "待结算（冻结中）"),
    "money.available": ("Available", "可用"),
    "money.reserved": ("Reserved (for a withdrawal)", "已预留（提现中）"),
    "money.debt": ("Debt", "欠款"),
    "money.payable": ("Fees payable to the platform", "应付平台服务费"),
    "money.no_balance": ("No money has moved yet.", "暂无资金变动。"),
    "money.later": (
        "Statements and withdrawals come with the next releases.",
        "对账单与提现将在后续版本上线。",
    ),
    "money.why_pending": ("Why money is pending", "待结算原因"),
    "money.reason": ("Reason", "原因"),
    "money.hold_reason": ("The platform's hold of {hold} after each sale", "平台对每笔销售的冻结期：{hold}"),
    "money.release_at": ("Released at", "解冻时间"),
    "money.no_holds": ("Nothing is on hold.", "没有冻结中的金额。"),
    "money.ledger": ("Ledger, newest first", "账本（最新在前）"),
    "money.at": ("When", "时间"),
    "money.kind": ("Event", "事件"),
    "money.account": ("Account", "账户"),
    "money.amount": ("Amount", "金额"),
    "money.after": ("Balance after", "变动后余额"),
    "money.no_lines": ("No ledger lines.", "没有账本记录。"),
    "money.older": ("Older lines", "更早的记录"),
    "money.newest": ("Newest lines", "最新记录"),
    "tx.sale": ("Sale", "销售"),
    "tx.refund": ("Refund", "退款"),
    "tx.release": ("Hold released", "解冻"),
    "tx.fee": ("Platform fee", "平台服务费"),
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
    "admin.brand": ("Miaofa platform admin", "秒发 平台管理"),
    "admin.nav.merchants": ("Merchants", "商家"),
    "admin.nav.flags": ("Flagged keys", "可疑卡密"),
    "admin.nav.check": ("Ledger check", "账本核对"),
    "admin.who": ("Signed in as {actor}", "当前登录：{actor}"),
    "admin.back": ("Back to the merchants", "返回商家列表"),
    "admin.signin_title": ("Platform admin sign-in", "平台管理员登录"),
    "admin.token": ("Admin token", "管理员令牌"),
    "admin.signin_help": (
        "The platform's admin token (MIAOFA_ADMIN_TOKEN) or a named staff token with the admin role. "
        "Merchant tokens open /console instead.",
        "平台管理员令牌（MIAOFA_ADMIN_TOKEN）或具有管理员角色的员工令牌。商家令牌请在 /console 登录。",
    ),
    "admin.signin_bad": ("That token is not a platform admin token.", "该令牌不是平台管理员令牌。"),
    "admin.merchants": ("Merchants", "商家"),
    "admin.slug": ("Shop", "店铺"),
    "admin.slug_hint": (
        "Slug (a-z, 0-9, -; the shop's address /s/<slug>/)",
        "标识（a-z、0-9、-；店铺地址 /s/<标识>/）",
    ),
    "admin.settlement": ("Settlement", "结算方式"),
    "admin.settle_platform": ("Platform collects", "平台代收"),
    "admin.settle_direct": ("Direct to merchant", "商家直收"),
    "admin.fee": ("Fee", "服务费"),
    "admin.fee_bps": ("Fee (basis points: 250 = 2.50 %)", "服务费（基点：250 = 2.50 %）"),
    "admin.hold": ("Hold", "冻结期"),
    "admin.hold_seconds": ("Hold after each sale (seconds; 86400 = 1 day)", "每笔销售的冻结期（秒；86400 = 1 天）"),
    "admin.status_active": ("Active", "营业中"),
    "admin.status_suspended": ("Suspended", "已暂停"),
    "admin.suspend": ("Suspend", "暂停"),
    "admin.resume": ("Resume", "恢复"),
    "admin.reason_hint": ("Reason (shop sees it)", "原因（商家可见）"),
    "admin.terms": ("Fee (bps) and hold (s)", "服务费（基点）与冻结期（秒）"),
    "admin.terms_hint": (
        "For later sales only; sales already made keep theirs.",
        "仅对之后的销售生效；已完成的销售不变。",
    ),
    "admin.done_terms": (
        "{slug}'s fee and hold are changed for later sales.",
        "{slug} 的服务费与冻结期已修改，仅对之后的销售生效。",
    ),
    "admin.suspend_hint": (
        "A suspension needs a reason: the shop reads it in its console. Its open orders still finish and "
        "its money stays its own.",
        "暂停店铺须填写原因：商家会在后台看到。进行中的订单照常完成，资金仍归商家所有。",
    ),
    "admin.create": ("Open a shop", "开设店铺"),
    "admin.new_token": (
        "Shop {slug} is open. Its owner's token, shown this once; give it to the owner now:",
        "店铺 {slug} 已开设。店主令牌仅显示这一次，请立即交给店主：",
    ),
    "admin.done_suspended": ("{slug} is suspended; its storefront says why.", "{slug} 已暂停；其店铺页面会显示原因。"),
    "admin.done_resumed": ("{slug} takes orders again.", "{slug} 已恢复接单。"),
    "admin.flags_help": (
        "Keys one shop imported that another shop already holds: a possible double sale. The importer was not told.",
        "某店铺导入的卡密已被另一店铺持有：可能重复售卖。导入方不会被告知。",
    ),
    "admin.imported_by": ("Imported by", "导入店铺"),
    "admin.also_held_by": ("Also held by", "同时持有"),
    "admin.no_flags": ("No flagged keys.", "没有可疑卡密。"),
    "admin.check_help": (
        "Every invariant of the ledger, checked now: balances against entries, zero-sum transactions, "
        "no negative balances, a sale for every delivered order and a clawback for every refund.",
        "立即核对账本的全部不变量：余额与分录一致、每笔交易借贷平衡、无负余额、每个已发货订单都有销售记录、每笔退款都有追回记录。",
    ),
    "admin.check_ok": ("The ledger adds up: no violations.", "账本平衡：没有违规项。"),
    "admin.check_bad": ("{n} violation(s) found.", "发现 {n} 个违规项。"),
    "admin.check": ("Check", "检查项"),
    "admin.detail": ("Detail", "详情"),
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
