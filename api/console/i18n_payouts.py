"""The console's words for withdrawals and their review, in English and Simplified Chinese (merged
into api/console/i18n.STRINGS), and a withdrawal's timeline notes read in Chinese.

The workflow writes each timeline note in English (workflows/payout.py, miaofa/payouts/withdrawals.py);
`note_in` recognises each of them and says it in the reader's language. A note it does not know is
shown as written, so a new one is never lost, only untranslated."""

import re

STRINGS: dict[str, tuple[str, str]] = {  # key: (English, 简体中文)
    "nav.withdrawals": ("Withdrawals", "提现"),
    "money.withdraw": ("Withdraw available money", "提现可用余额"),
    "wd.title": ("Withdrawals", "提现"),
    "wd.help": (
        "A withdrawal sets its amount aside from the available balance at once, is reviewed (large amounts "
        "by platform finance), then sent; it ends paid, or back in your balance with the reason.",
        "提现会立即从可用余额中预留金额，经审核（大额由平台财务审核）后转出；最终到账，或连同原因退回余额。",
    ),
    "wd.available": ("Available to withdraw", "可提现余额"),
    "wd.request": ("Request a withdrawal", "申请提现"),
    "wd.amount": ("Amount", "金额"),
    "wd.amount_hint": ("Amount (e.g. 100 or 99.50)", "金额（如 100 或 99.50）"),
    "wd.currency": ("Currency", "币种"),
    "wd.destination": ("Destination", "收款账户"),
    "wd.submit": ("Withdraw", "提现"),
    "wd.rules": (
        "The smallest withdrawal is {min}. Fee: {fee}, kept from what is sent.",
        "单笔最低 {min}。手续费：{fee}，从到账金额中扣除。",
    ),
    "wd.no_fee": ("none", "无"),
    "wd.no_destination": (
        "Add a destination below before the first withdrawal.",
        "首次提现前，请先在下方添加收款账户。",
    ),
    "wd.no_destination_staff": (
        "The shop has no destination yet; its owner adds one.",
        "本店尚无收款账户，需由店主添加。",
    ),
    "wd.cooling": ("usable from {at}", "{at} 起可用"),
    "wd.list": ("Withdrawals, newest first", "提现记录（最新在前）"),
    "wd.none": ("No withdrawals yet.", "暂无提现记录。"),
    "wd.id": ("Withdrawal", "提现单"),
    "wd.status": ("Status", "状态"),
    "wd.requested_at": ("Requested", "申请时间"),
    "wd.paid_at": ("Paid", "到账时间"),
    "wd.fee": ("Fee", "手续费"),
    "wd.sent": ("Sent to the destination", "实际到账"),
    "wd.rail": ("Rail", "通道"),
    "wd.why": ("Why", "原因"),
    "wd.timeline": ("Timeline", "时间线"),
    "wd.back": ("All withdrawals", "全部提现"),
    "wd.live": (
        "This page refreshes itself until the withdrawal is settled.",
        "提现完成前，此页面会自动刷新。",
    ),
    "wd.requested": ("Your withdrawal is requested.", "提现申请已提交。"),
    "wd.destinations": ("Destinations", "收款账户"),
    "wd.dest_account": ("Account", "账户"),
    "wd.dest_usable": ("Usable from", "可用时间"),
    "wd.dest_ready": ("Ready", "可用"),
    "wd.dest_none": ("No destinations yet.", "暂无收款账户。"),
    "wd.dest_add": ("Add a destination", "添加收款账户"),
    "wd.dest_account_hint": ("Account number", "收款账号"),
    "wd.dest_name_hint": ("Account holder's name", "收款人姓名"),
    "wd.dest_help": (
        "Saved encrypted and shown masked from now on. A new destination can be paid after {delay}: "
        "a cooling-off that protects the balance if a token is stolen.",
        "保存时即加密，此后仅显示掩码。新收款账户需等待 {delay} 后才能收款：即使令牌被盗，冷静期也能保护余额。",
    ),
    "wd.dest_help_now": ("Saved encrypted and shown masked from now on.", "保存时即加密，此后仅显示掩码。"),
    "wd.dest_added": ("{masked} is saved; it can be paid from {at}.", "{masked} 已保存，{at} 起可收款。"),
    "wd.owner_only": ("Only the shop's owner adds destinations.", "只有店主可以添加收款账户。"),
    "wd.err.insufficient_funds": (
        "Not enough available money: {available} can be withdrawn now.",
        "可用余额不足：当前可提现 {available}。",
    ),
    "wd.err.debt_outstanding": (
        "The shop owes the platform {debt} (a refund after its share was paid out). "
        "Withdrawals wait until that debt is settled by new sales.",
        "本店欠平台 {debt}（分成入账后发生了退款）。在新的销售抵清欠款之前，暂不能提现。",
    ),
    "wd.err.below_minimum": ("The smallest withdrawal is {min}.", "单笔提现最低 {min}。"),
    "wd.err.fee_too_big": ("The fee ({fee}) would take the whole amount.", "手续费（{fee}）将占去全部金额。"),
    "wd.err.destination_cooling_off": (
        "{masked} is a new destination: it can be paid from {at}. The wait protects the balance if a token is stolen.",
        "{masked} 是新添加的收款账户，{at} 起才能收款。冷静期可在令牌被盗时保护余额。",
    ),
    "wd.err.destination_not_found": ("Choose one of the shop's destinations.", "请选择本店的收款账户。"),
    "wd.err.idempotency_key_reused": (
        "This form was already used for a different withdrawal. Reload the page and try again.",
        "此表单已用于另一笔提现。请刷新页面后重试。",
    ),
    "wd.err.other": ("The withdrawal was not made: {detail}", "提现未成功：{detail}"),
    "wstatus.requested": ("Requested", "已申请"),
    "wstatus.in_review": ("In review", "审核中"),
    "wstatus.approved": ("Approved", "已批准"),
    "wstatus.submitted": ("Being sent", "转账中"),
    "wstatus.paid": ("Paid", "已到账"),
    "wstatus.failed": ("Failed, money back", "失败，已退回"),
    "wstatus.rejected": ("Rejected, money back", "已拒绝，已退回"),
    "wstatus.returned": ("Returned, money back", "被退回，已返还"),
    "wstage.requested": ("Requested", "已申请"),
    "wstage.in_review": ("Waiting for review", "等待审核"),
    "wstage.review_late": ("Review running late", "审核超时"),
    "wstage.review_approved": ("Approval", "审核通过"),
    "wstage.approved": ("Approved", "已批准"),
    "wstage.rejected": ("Rejected", "已拒绝"),
    "wstage.submitted": ("Sent to the rail", "已提交通道"),
    "wstage.checking": ("Checking with the rail", "向通道查询中"),
    "wstage.resubmitted": ("Sent again", "已重新提交"),
    "wstage.await_confirm": ("Waiting for the payee", "等待收款人确认"),
    "wstage.paid": ("Paid", "已到账"),
    "wstage.failed": ("Failed", "失败"),
    "wstage.cancelled": ("Cancelled", "已取消"),
    "wstage.returned": ("Returned", "已退回"),
    "admin.nav.withdrawals": ("Withdrawals", "提现审核"),
    "admin.wd.title": ("Withdrawals waiting for review", "待审核的提现"),
    "admin.wd.help": (
        "Above {auto} a withdrawal waits here for platform finance; above {two}, two different people must "
        "approve it. Each decision needs a reason: the shop reads it on the withdrawal's timeline.",
        "超过 {auto} 的提现在此等待平台财务审核；超过 {two} 须由两位不同人员批准。"
        "每次审核都须填写原因：商家会在提现时间线上看到。",
    ),
    "admin.wd.none": ("Nothing is waiting for review.", "没有待审核的提现。"),
    "admin.wd.age": ("Waiting", "已等待"),
    "admin.wd.approvals": ("Approvals", "批准"),
    "admin.wd.of": ("{n} of {needed}", "{n} / {needed}"),
    "admin.wd.approve": ("Approve", "批准"),
    "admin.wd.reject": ("Reject", "拒绝"),
    "admin.wd.reason": ("Reason (the shop reads it)", "原因（商家可见）"),
    "admin.wd.done_approve": ("Your approval of {id} is recorded.", "您对 {id} 的批准已记录。"),
    "admin.wd.done_reject": (
        "{id} is rejected; its money is back in the shop's balance.",
        "{id} 已拒绝；款项已退回商家余额。",
    ),
    "admin.wd.err.same_approver": (
        "You have already approved this withdrawal. Above {two} a second, different person of platform "
        "finance must approve it.",
        "您已批准过这笔提现。超过 {two} 的提现须由另一位平台财务人员再次批准。",
    ),
    "admin.wd.err.not_in_review": (
        "This withdrawal is no longer waiting for review: it has been decided already.",
        "这笔提现已不在待审核状态：已有人处理。",
    ),
    "admin.wd.err.withdrawal_not_found": ("No such withdrawal.", "没有这笔提现。"),
}

# The rail's payee-side reasons (miaofa/payouts/rails.py SIMULATOR_DEFINITIVE, returns) in Chinese.
REASONS_ZH = {
    "the name given does not match the account's holder": "收款人姓名与账户持有人不符",
    "the account does not exist": "收款账户不存在",
    "the payee's account is frozen and cannot receive money": "收款账户已冻结，无法收款",
    "the payee's bank sent it back": "收款银行已退回",
    "the payee's bank returned it: the account is closed": "收款银行已退回：账户已注销",
}

_M = r"(?P<{}>[0-9]+\.[0-9]{{2}} [A-Z]{{3,8}})"  # withdrawals.money: "12.34 CNY"
_NOTES_ZH: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            rf"^You asked for {_M.format('amount')} to (?P<dest>.+); the fee is {_M.format('fee')}\. "
            r"The money is set aside from your balance\.$"
        ),
        "您申请提现 {amount} 至 {dest}；手续费 {fee}。该金额已从余额中预留。",
    ),
    (re.compile(r"^Approved automatically\.$"), "已自动批准。"),
    (re.compile(r"^Waiting for review by two people of platform finance\.$"), "等待两位平台财务人员审核。"),
    (re.compile(r"^Waiting for review by platform finance\.$"), "等待平台财务审核。"),
    (
        re.compile(r"^The review is taking longer than usual; finance has been reminded\.$"),
        "审核时间比平时长；已提醒平台财务。",
    ),
    (re.compile(r"^Approved by (?P<actor>[^:]+): (?P<reason>.+)$", re.S), "{actor} 已批准：{reason}"),
    (re.compile(r"^Approved by (?P<actor>[^:]+)$"), "{actor} 已批准"),
    (re.compile(r"^Approved\.$"), "已批准。"),
    (
        re.compile(r"^Rejected by platform finance: (?P<reason>.*)\. The money is back in your balance\.$", re.S),
        "平台财务已拒绝：{reason}。款项已退回余额。",
    ),
    (
        re.compile(rf"^Sent to the (?P<rail>[a-z_]+) rail: {_M.format('sent')}, transfer number (?P<number>\S+)\.$"),
        "已通过 {rail} 通道转出 {sent}，转账单号 {number}。",
    ),
    (re.compile(rf"^Paid: {_M.format('sent')} arrived\.$"), "已到账：{sent}。"),
    (
        re.compile(r"^The transfer failed: (?P<reason>.+)\. The money is back in your balance\.$", re.S),
        "转账失败：{reason}。款项已退回余额。",
    ),
    (
        re.compile(r"^The payee did not confirm in time; the transfer was cancelled and the money is back\.$"),
        "收款人未在时限内确认；转账已取消，款项已退回。",
    ),
    (
        re.compile(r"^The rail had not received it; sent again with the same number\.$"),
        "通道未收到该转账；已用同一单号重新提交。",
    ),
    (re.compile(r"^Waiting for the payee to accept the transfer\.$"), "等待收款人确认收款。"),
    (
        re.compile(r"^The rail has not confirmed the outcome yet; we keep asking it\.$"),
        "通道尚未确认结果；我们会持续查询。",
    ),
    (
        re.compile(rf"^{_M.format('sent')} came back: (?P<reason>.+)\. The money is back in your balance\.$", re.S),
        "{sent} 被退回：{reason}。款项已退回余额。",
    ),
]


def note_in(note: str, lang: str) -> str:
    """A timeline note in the reader's language (the workflow writes English)."""
    if lang != "zh":
        return note
    for pattern, words in _NOTES_ZH:
        found = pattern.match(note)
        if found:
            parts = found.groupdict()
            if "reason" in parts:
                parts["reason"] = REASONS_ZH.get(parts["reason"], parts["reason"])
            return words.format(**parts)
    return note
