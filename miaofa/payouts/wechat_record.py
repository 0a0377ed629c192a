"""WeChat Pay's record of the platform's 商家转账: the fund-flow bill (资金账单, /v3/bill/fundflowbill,
基本账户), one per Beijing day, its 商家转账 rows tied to our transfers.

The fund-flow bill names a movement by WeChat's numbers (微信支付业务单号: the transfer's
transfer_bill_no; 业务凭证号 is WeChat's too in the documented example), never by our out_bill_no.
So each of our transfers of the window is asked for once (商户单号查询转账单, which answers its
transfer_bill_no: fixed for good, so kept), and a row whose number none of ours has is a transfer
we do not know. Formats and sources: docs/gateway-bills.md.
"""

from collections import OrderedDict
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING

from miaofa import steps as s
from miaofa.gateways.base import GatewayError
from miaofa.gateways.bills import DAYS_KEPT, SHANGHAI, bill_days
from miaofa.gateways.wechat_bill import FundLine, parse_fund_flow, parsed
from miaofa.payouts.rails import RailTransfer

if TYPE_CHECKING:
    from miaofa.gateways.wechat import WechatGateway

BILLS = "/v3/fund-app/mch-transfer/transfer-bills"
FUND_FLOW = "/v3/bill/fundflowbill"
# 业务名称 of a 商家转账 movement (WeChat's bills write the product's name; not in a published list).
TRANSFER_NAMES = frozenset({"商家转账", "商家转账到零钱"})
KEPT_NUMBERS = 10_000


def bill_no(number: str) -> str:
    """WeChat takes letters and digits only: the withdrawal id without its underscore (still unique)."""
    return number.replace("_", "")


class FundFlowRecord:
    def __init__(self, wechat: "WechatGateway") -> None:
        self._wechat = wechat
        self._days: OrderedDict[date, list[FundLine]] = OrderedDict()
        self._numbers: OrderedDict[str, str] = OrderedDict()  # transfer_bill_no → our number

    async def transfers(self, start: datetime, end: datetime, ours: Sequence[str]) -> list[RailTransfer]:
        """The 商家转账 out of the basic account in [start, end); StatementNotReady for a day not out yet."""
        lines: list[FundLine] = []
        for day in bill_days(start, end, SHANGHAI):
            if day not in self._days:
                text = await self._wechat.bill("payout statement", FUND_FLOW, day, {"account_type": "BASIC"})
                self._days[day] = parsed(parse_fund_flow, text)
                while len(self._days) > DAYS_KEPT:
                    self._days.popitem(last=False)
            lines += [line for line in self._days[day] if start <= line.at < end and line.name in TRANSFER_NAMES]
        if any(line.business_no not in self._numbers for line in lines):
            await self._learn(ours)
        out: dict[str, int] = {}
        back: dict[str, int] = {}
        for line in lines:
            number = self._numbers.get(line.business_no, line.business_no)
            into = back if line.income else out
            into[number] = into.get(number, 0) + line.amount_cents
        # Money back under the same number (a cancel, a failure after the debit): nothing was paid.
        return [
            RailTransfer(number, s.TRANSFER_RETURNED if back.get(number, 0) >= sent else s.TRANSFER_PAID, sent, "CNY")
            for number, sent in out.items()
        ]

    async def _learn(self, ours: Sequence[str]) -> None:
        known = set(self._numbers.values())
        for number in ours:
            if number in known:
                continue
            response = await self._wechat.call("payout statement", "GET", f"{BILLS}/out-bill-no/{bill_no(number)}")
            if response.status_code == 404:
                continue  # never made at WeChat: nothing of it in the bill
            if response.status_code != 200:
                raise GatewayError(f"wechat payout statement: HTTP {response.status_code}")
            data = response.json()
            found = data.get("transfer_bill_no") if isinstance(data, dict) else None
            if not isinstance(found, str) or not found or data.get("out_bill_no") != bill_no(number):
                raise GatewayError("wechat payout statement: malformed transfer bill")
            self._numbers[found] = number
            while len(self._numbers) > KEPT_NUMBERS:
                self._numbers.popitem(last=False)
