"""Alipay as a payout rail: 单笔转账 `alipay.fund.trans.uni.transfer` (TRANS_ACCOUNT_NO_PWD, to an
Alipay account) and `alipay.fund.trans.common.query`, signed and verified as the payment adapter does.

Alipay is idempotent on `out_biz_no`: the withdrawal's id, the same on every try. Its guidance for an
unclear answer (a timeout, code 20000, 40004 SYSTEM_ERROR) is to query and, when the query finds
nothing, send the same request again, which is what PayoutWorkflow does with `not_found`. Only the
payee-side sub_codes below are definitive; a decision is made on sub_code, never on sub_msg. The
formats and sources are in docs/payout-rails.md.
"""

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime

import httpx

from miaofa import steps as s
from miaofa.gateways.alipay import AlipayGateway, BusinessFailure
from miaofa.gateways.alipay_bill import AccountLine, parse_account_zip
from miaofa.gateways.alipay_wire import CURRENCY, error_code
from miaofa.gateways.base import GatewayError, GatewayRefused
from miaofa.gateways.bills import DAYS_KEPT, SHANGHAI, BillError, bill_days
from miaofa.gateways.config import AlipaySettings
from miaofa.gateways.money import to_major
from miaofa.payouts.rails import RailTransfer, Transfer

TRANSFER = "alipay.fund.trans.uni.transfer"
QUERY = "alipay.fund.trans.common.query"
PRODUCT = "TRANS_ACCOUNT_NO_PWD"
SCENE = "DIRECT_TRANSFER"
# 业务类型 of a 单笔转账 in the account bill (as Alipay's bills show it; not in a published list).
TRANSFER_KINDS = frozenset({"转账"})
USER_ID = re.compile(r"^2088\d{12}$")  # an Alipay user id; anything else is a logon id (phone or email)

# The payee's side said no: the money did not leave, and asking again will not change it.
DEFINITIVE = {
    "PAYEE_NOT_EXIST": "the Alipay account does not exist",
    "PAYEE_USER_INFO_ERROR": "the name given does not match the Alipay account's holder",
    "PAYEE_ACC_OCUPIED": "the phone number belongs to several Alipay accounts; give the holder's name",
    "PAYEE_ACCOUNT_STATUS_ERROR": "the payee's Alipay account cannot receive money (frozen or closed)",
    "PAYEE_NOT_RELNAME_CERTIFY": "the payee's Alipay account has no verified real name",
}
STATUSES = {
    "SUCCESS": s.TRANSFER_PAID,
    "DEALING": s.TRANSFER_PROCESSING,
    "WAIT_PAY": s.TRANSFER_PROCESSING,
    "REFUND": s.TRANSFER_RETURNED,  # a bank card transfer came back
}


class AlipayRail:
    name = "alipay"
    can_cancel = False  # an Alipay transfer is not waiting for anyone: there is nothing to withdraw
    has_statement = True  # the account bill (账务明细, bill_type=signcustomer), by Beijing day
    bill_zone = SHANGHAI

    def __init__(
        self,
        settings: AlipaySettings,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._alipay = AlipayGateway(settings, client, clock)
        self._days: OrderedDict[date, list[AccountLine]] = OrderedDict()

    async def submit(self, transfer: Transfer) -> s.TransferAnswer:
        if transfer.currency != CURRENCY:  # refused before anything is sent: definitive, the money comes back
            return s.TransferAnswer(
                s.TRANSFER_FAILED, code="currency", reason=f"Alipay pays out {CURRENCY} only", definitive=True
            )
        identity_type = "ALIPAY_USER_ID" if USER_ID.match(transfer.account) else "ALIPAY_LOGON_ID"
        biz = {
            "out_biz_no": transfer.number,
            "trans_amount": to_major(transfer.amount_cents, CURRENCY),
            "product_code": PRODUCT,
            "biz_scene": SCENE,
            "order_title": "Miaofa withdrawal",
            "payee_info": {"identity": transfer.account, "identity_type": identity_type, "name": transfer.name},
        }
        return await self._ask("submit", TRANSFER, biz, transfer.number)

    async def query(self, number: str) -> s.TransferAnswer:
        biz = {"out_biz_no": number, "product_code": PRODUCT, "biz_scene": SCENE}
        return await self._ask("query", QUERY, biz, number)

    async def cancel(self, number: str) -> s.TransferAnswer:
        return await self.query(number)  # can_cancel is False: the activity never asks, but be safe

    async def aclose(self) -> None:
        await self._alipay.aclose()

    async def statement(self, start: datetime, end: datetime, ours: Sequence[str] = ()) -> list[RailTransfer]:
        """The transfers out of the platform's Alipay account in [start, end), from its account bill;
        StatementNotReady for a day not out yet."""
        lines: list[AccountLine] = []
        for day in bill_days(start, end, SHANGHAI):
            if day not in self._days:
                data = await self._alipay.bill_zip("payout statement", "signcustomer", day)
                try:
                    self._days[day] = parse_account_zip(data) if data is not None else []
                except BillError as exc:
                    raise GatewayError(str(exc)) from None
                while len(self._days) > DAYS_KEPT:
                    self._days.popitem(last=False)
            lines += [line for line in self._days[day] if start <= line.at < end and line.kind in TRANSFER_KINDS]
        return account_transfers(lines)

    async def _ask(self, op: str, method: str, biz: dict, number: str) -> s.TransferAnswer:
        try:
            data = await self._alipay.call(f"payout {op}", method, biz)
        except BusinessFailure as failure:
            return self._business_failure(op, failure.sub_code)
        except (GatewayError, GatewayRefused) as exc:  # 20000, HTTP, signature, no permission: unclear
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code=_code_of(exc), reason="Alipay's answer was unclear")
        if data.get("out_biz_no") not in (None, number):  # an answer about another transfer: not ours to act on
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code="other_transfer", reason="Alipay's answer was unclear")
        status = str(data.get("status", ""))
        if status == "FAIL":
            code = error_code(data.get("error_code") or data.get("sub_code"))
            if op == "query":  # the query's FAIL is Alipay's final word on this out_biz_no: nothing was paid
                words = DEFINITIVE.get(code) or f"Alipay did not pay it ({code or 'no code'})"
                return s.TransferAnswer(s.TRANSFER_FAILED, code=code, reason=words, definitive=True)
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code=code, reason="Alipay answered FAIL; asking again")
        mapped = STATUSES.get(status)
        if mapped is None:
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code=status[:64], reason="Alipay's answer was unclear")
        if mapped == s.TRANSFER_RETURNED:
            return s.TransferAnswer(mapped, code="REFUND", reason="the payee's bank sent it back")
        return s.TransferAnswer(mapped, code=status)

    @staticmethod
    def _business_failure(op: str, sub_code: str) -> s.TransferAnswer:
        if op == "query" and sub_code == "ORDER_NOT_EXIST":
            return s.TransferAnswer(s.TRANSFER_NOT_FOUND, code=sub_code, reason="Alipay has no such transfer")
        words = DEFINITIVE.get(sub_code)
        if words is not None:
            return s.TransferAnswer(s.TRANSFER_FAILED, code=sub_code, reason=words, definitive=True)
        # SYSTEM_ERROR, a balance or limit of ours, anything unfamiliar: maybe sent, maybe not; ask again
        return s.TransferAnswer(s.TRANSFER_UNKNOWN, code=sub_code[:64], reason="Alipay answered an unfamiliar code")


def account_transfers(lines: list[AccountLine]) -> list[RailTransfer]:
    """Each number's transfer out; money back under the same number (a bank card's return) makes it
    returned. A 转账 into the account with no transfer out is someone paying us: not a payout."""
    out: dict[str, int] = {}
    back: dict[str, int] = {}
    for line in lines:
        if line.cents < 0:
            out[line.number] = out.get(line.number, 0) - line.cents
        else:
            back[line.number] = back.get(line.number, 0) + line.cents
    returned = {number for number, amount in out.items() if back.get(number, 0) >= amount}
    return [
        RailTransfer(number, s.TRANSFER_RETURNED if number in returned else s.TRANSFER_PAID, amount, CURRENCY)
        for number, amount in out.items()
    ]


def _code_of(exc: Exception) -> str:
    """The codes at the end of the adapter's message ("alipay payout submit: 20000 isp.unknow-error")."""
    return str(exc).rsplit(":", 1)[-1].strip()[:64]
