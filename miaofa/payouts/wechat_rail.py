"""WeChat Pay 商家转账 as a payout rail: `POST /v3/fund-app/mch-transfer/transfer-bills`, the query by
`out_bill_no` and its cancel, signed and verified as the payment adapter does (API v3).

The payee must confirm in WeChat: a new bill answers `WAIT_USER_CONFIRM` and the workflow waits with
its own timeout, then cancels. WeChat's rule for any unclear answer is to keep the `out_bill_no` and
query before anything; a bill that does not exist (404 NOT_FOUND) may be sent again under the same
number. A bill in `FAIL` is final (nothing was paid): its `fail_reason` is said in words where we know
it. Formats and sources: docs/payout-rails.md.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx

from miaofa import steps as s
from miaofa.gateways import wechat_wire as wire
from miaofa.gateways.base import GatewayError, GatewayRefused
from miaofa.gateways.bills import SHANGHAI
from miaofa.gateways.config import WechatSettings
from miaofa.gateways.wechat import WechatGateway
from miaofa.payouts.rails import RailTransfer, Transfer
from miaofa.payouts.wechat_record import BILLS, FundFlowRecord, bill_no

NAME_REQUIRED_FROM_FEN = 200000  # from 2,000 yuan WeChat requires the payee's real name (sealed)

STATES = {
    "ACCEPTED": s.TRANSFER_PROCESSING,
    "PROCESSING": s.TRANSFER_PROCESSING,
    "TRANSFERING": s.TRANSFER_PROCESSING,
    "CANCELING": s.TRANSFER_PROCESSING,
    "WAIT_USER_CONFIRM": s.TRANSFER_WAIT_CONFIRM,
    "SUCCESS": s.TRANSFER_PAID,
    "CANCELLED": s.TRANSFER_CANCELLED,
}
# fail_reason of a FAIL bill, in words the merchant reads (others are named by their code).
FAIL_REASONS = {
    "ACCOUNT_FROZEN": "the payee's WeChat account is frozen",
    "ACCOUNT_NOT_EXIST": "the WeChat account does not exist",
    "REAL_NAME_CHECK_FAIL": "the payee's WeChat account has no verified real name",
    "NAME_NOT_CORRECT": "the name given does not match the WeChat account's holder",
    "OPENID_INVALID": "the WeChat user id is not valid for the platform's app",
    "PAYEE_ACCOUNT_ABNORMAL": "the payee's WeChat account cannot receive money",
    "DAY_RECEIVED_QUOTA_EXCEED": "the payee has reached WeChat's daily limit",
    "MONTH_RECEIVED_QUOTA_EXCEED": "the payee has reached WeChat's monthly limit",
    "OVERDUE_CLOSE": "the payee did not confirm it in time",
    "MERCHANT_REJECT": "the platform withdrew the transfer",
}


class WechatRail:
    name = "wechat"
    can_cancel = True  # a bill waiting for the payee's confirmation can be withdrawn
    has_statement = True  # the fund-flow bill's 商家转账 rows, by Beijing day (wechat_record.py)
    bill_zone = SHANGHAI

    def __init__(
        self,
        settings: WechatSettings,
        scene_id: str,
        scene_report: dict[str, str],
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._wechat = WechatGateway(settings, client)
        self._appid = settings.appid
        self._scene_id = scene_id
        self._scene_report = scene_report
        self._record = FundFlowRecord(self._wechat)

    async def submit(self, transfer: Transfer) -> s.TransferAnswer:
        if transfer.currency != "CNY":
            return s.TransferAnswer(
                s.TRANSFER_FAILED, code="currency", reason="WeChat pays out CNY only", definitive=True
            )
        payload: dict[str, Any] = {
            "appid": self._appid,
            "out_bill_no": bill_no(transfer.number),
            "transfer_scene_id": self._scene_id,
            "openid": transfer.account,
            "transfer_amount": transfer.amount_cents,
            "transfer_remark": "Miaofa withdrawal",
            "transfer_scene_report_infos": [
                {"info_type": kind, "info_content": text} for kind, text in self._scene_report.items()
            ],
        }
        if transfer.amount_cents >= NAME_REQUIRED_FROM_FEN:
            try:
                payload["user_name"], _ = self._wechat.seal_for_wechat(transfer.name)
            except GatewayRefused:  # our configuration, not the payee's: ask again once it is fixed
                return s.TransferAnswer(s.TRANSFER_UNKNOWN, code="no_public_key", reason="the rail is not ready")
        return await self._ask("submit", "POST", BILLS, transfer.number, payload)

    async def query(self, number: str) -> s.TransferAnswer:
        return await self._ask("query", "GET", f"{BILLS}/out-bill-no/{bill_no(number)}", number)

    async def cancel(self, number: str) -> s.TransferAnswer:
        answer = await self._ask("cancel", "POST", f"{BILLS}/out-bill-no/{bill_no(number)}/cancel", number, {})
        if answer.status == s.TRANSFER_UNKNOWN:  # e.g. the payee confirmed meanwhile: the bill says what it is
            return await self.query(number)
        return answer

    async def aclose(self) -> None:
        await self._wechat.aclose()

    async def statement(self, start: datetime, end: datetime, ours: Sequence[str] = ()) -> list[RailTransfer]:
        return await self._record.transfers(start, end, ours)

    async def _ask(
        self, op: str, method: str, path: str, number: str, payload: dict[str, Any] | None = None
    ) -> s.TransferAnswer:
        try:
            response = await self._wechat.call(f"payout {op}", method, path, payload)
        except (GatewayError, GatewayRefused) as exc:  # a 5xx, no answer, an answer WeChat did not sign
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code=type(exc).__name__, reason="WeChat's answer was unclear")
        code = wire.error_code(response)
        if response.status_code == 404 and op != "submit":
            return s.TransferAnswer(s.TRANSFER_NOT_FOUND, code=code or "NOT_FOUND", reason="WeChat has no such bill")
        if response.status_code != 200:  # 4xx at submit: keep the number, query first (WeChat's rule)
            return s.TransferAnswer(
                s.TRANSFER_UNKNOWN, code=(code or str(response.status_code))[:64], reason="WeChat refused the call"
            )
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("out_bill_no") != bill_no(number):
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code="unreadable", reason="WeChat's answer was unclear")
        state = str(data.get("state", ""))
        if state == "FAIL":
            reason = str(data.get("fail_reason") or "")[:64]
            words = FAIL_REASONS.get(reason) or f"WeChat did not pay it ({reason or 'no reason given'})"
            return s.TransferAnswer(s.TRANSFER_FAILED, code=reason, reason=words, definitive=True)
        mapped = STATES.get(state)
        if mapped is None:
            return s.TransferAnswer(s.TRANSFER_UNKNOWN, code=state[:64], reason="WeChat's answer was unclear")
        return s.TransferAnswer(mapped, code=state)
