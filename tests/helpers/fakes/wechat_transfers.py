"""WeChat Pay 商家转账 (transfer-bills) on the fake WeChat: bills under `out_bill_no`, the payee's
confirmation, cancel and query, behind the fake's signed-request check and signed answers.

`mode` says what a new bill does: "WAIT_USER_CONFIRM" (the product's usual answer), "SUCCESS",
"PROCESSING", "FAIL:<reason>", or "lost" (made, but the caller gets a 500). The test plays the payee
with `confirm`, and WeChat's 24 h expiry with `expire`.
"""

import base64
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from starlette.requests import Request

from tests.helpers.fakes.wechat import CHINA, FakeWechat

BILLS = "/v3/fund-app/mch-transfer/transfer-bills"


@dataclass
class Bill:
    out_bill_no: str
    amount: int
    openid: str
    state: str
    user_name: str = ""  # as the fake decrypted it
    fail_reason: str = ""
    transfer_bill_no: str = field(default_factory=lambda: "1330" + secrets.token_hex(14))
    submits: int = 1
    at: str = field(default_factory=lambda: datetime.now(CHINA).strftime("%Y-%m-%d %H:%M:%S"))  # when it left


class TransferBills:
    def __init__(self, fake: FakeWechat) -> None:
        self.fake = fake
        self.bills: dict[str, Bill] = {}
        self.mode = "WAIT_USER_CONFIRM"
        fake.more_routes += [
            (BILLS, self._create, "POST"),
            (BILLS + "/out-bill-no/{no}", self._query, "GET"),
            (BILLS + "/out-bill-no/{no}/cancel", self._cancel, "POST"),
        ]

    def confirm(self, out_bill_no: str) -> None:
        bill = self.bills[out_bill_no]
        assert bill.state == "WAIT_USER_CONFIRM", bill.state
        bill.state = "SUCCESS"

    def expire(self, out_bill_no: str) -> None:
        self.bills[out_bill_no].state, self.bills[out_bill_no].fail_reason = "FAIL", "OVERDUE_CLOSE"

    def _answer(self, bill: Bill) -> dict[str, Any]:
        answer = {
            "out_bill_no": bill.out_bill_no,
            "transfer_bill_no": bill.transfer_bill_no,
            "create_time": datetime.now(CHINA).isoformat(timespec="seconds"),
            "state": bill.state,
        }
        if bill.state == "WAIT_USER_CONFIRM":
            answer["package_info"] = "affffddafdfafddffda=="
        if bill.fail_reason:
            answer["fail_reason"] = bill.fail_reason
        return answer

    def _create(self, request: Request, data: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        no, amount = data.get("out_bill_no"), data.get("transfer_amount")
        valid = (
            data.get("appid") == self.fake.keys.appid
            and isinstance(no, str)
            and no.isalnum()
            and 5 <= len(no) <= 32
            and type(amount) is int
            and amount >= 10
            and isinstance(data.get("openid"), str)
            and bool(data.get("transfer_scene_id"))
            and isinstance(data.get("transfer_scene_report_infos"), list)
        )
        if not valid:
            return 400, {"code": "PARAM_ERROR", "message": "参数错误"}
        name = ""
        if "user_name" in data:
            if request.headers.get("wechatpay-serial") != self.fake.keys.public_key_id:
                return 400, {"code": "PARAM_ERROR", "message": "Wechatpay-Serial"}
            sealed = base64.b64decode(data["user_name"])
            oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
            name = self.fake.keys.platform_key.decrypt(sealed, oaep).decode()
        elif amount >= 200000:
            return 400, {"code": "PARAM_ERROR", "message": "user_name required from 2000 yuan"}
        bill = self.bills.get(no)  # type: ignore[arg-type]
        if bill is not None:  # the same out_bill_no is the same bill; other parameters are refused
            if (bill.amount, bill.openid) != (amount, data["openid"]):
                return 400, {"code": "INVALID_REQUEST", "message": "商户单号重复"}
            bill.submits += 1
            return 200, self._answer(bill)
        if self.mode.startswith("FAIL:"):
            bill = Bill(no, amount, data["openid"], "FAIL", name, self.mode.removeprefix("FAIL:"))  # type: ignore[arg-type]
        else:
            state = "WAIT_USER_CONFIRM" if self.mode == "lost" else self.mode
            bill = Bill(no, amount, data["openid"], state, name)  # type: ignore[arg-type]
        self.bills[bill.out_bill_no] = bill
        if self.mode == "lost":
            return 500, {"code": "SYSTEM_ERROR", "message": "系统繁忙"}
        return 200, self._answer(bill)

    def _query(self, request: Request, data: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        bill = self.bills.get(request.path_params["no"])
        if bill is None:
            return 404, {"code": "NOT_FOUND", "message": "记录不存在"}
        return 200, {**self._answer(bill), "appid": self.fake.keys.appid, "transfer_amount": bill.amount}

    def _cancel(self, request: Request, data: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        bill = self.bills.get(request.path_params["no"])
        if bill is None:
            return 404, {"code": "NOT_FOUND", "message": "记录不存在"}
        if bill.state != "WAIT_USER_CONFIRM":
            return 400, {"code": "INVALID_REQUEST", "message": "单据状态不允许撤销"}
        bill.state = "CANCELLED"
        return 200, {"out_bill_no": bill.out_bill_no, "transfer_bill_no": bill.transfer_bill_no, "state": "CANCELLED"}
