"""The payout rails' own records, read from files built exactly as documented: Alipay's account bill
(账务明细, bill_type=signcustomer: a zip of GBK CSV, fields padded with tabs, `#支出合计/#收入合计`
summary lines) and Stripe's transfer objects; only transfers out become rail transfers."""

from datetime import UTC, date, datetime

import pytest

from miaofa import steps as s
from miaofa.gateways.alipay_bill import AccountLine, parse_account, parse_account_zip
from miaofa.gateways.bills import BillError
from miaofa.payouts.alipay_rail import TRANSFER_KINDS, account_transfers
from miaofa.payouts.rails import RailTransfer
from miaofa.payouts.stripe_rail import _record
from tests.helpers.fakes.bills import AlipayAccountRow, AlipayRow, alipay_account_detail, alipay_account_zip, alipay_zip

PID = "2088000000000009"
DAY = date(2026, 12, 3)
WD_B = "wd_bbbbbbbbbbbbbbbbbbbb"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text + "+08:00").astimezone(UTC)


def rows() -> list[AlipayAccountRow]:
    return [
        AlipayAccountRow("31001", "wd_aaaaaaaaaaaaaaaaaaaa", "转账", "2026-12-03 09:00:01", expense="-9.50"),
        AlipayAccountRow("31002", "ord_1", "在线支付", "2026-12-03 10:00:00", income="20.00", subject="卡密, 月卡"),
        AlipayAccountRow("31003", "", "收费", "2026-12-03 10:00:00", expense="-0.12", subject="服务费"),
        # An older bill writes 支出 without its sign; a name with a quote is quoted and doubled.
        AlipayAccountRow(
            "31004", "wd_bbbbbbbbbbbbbbbbbbbb", "转账", "2026-12-03 23:59:59", expense="12.30", other='李"四'
        ),
    ]


def test_the_account_bill_zip_reads_every_movement_with_its_sign() -> None:
    lines = parse_account_zip(alipay_account_zip(PID, DAY, rows()))
    assert lines == [
        AccountLine("wd_aaaaaaaaaaaaaaaaaaaa", "转账", at("2026-12-03T09:00:01"), -950),
        AccountLine("ord_1", "在线支付", at("2026-12-03T10:00:00"), 2000),
        AccountLine("31003", "收费", at("2026-12-03T10:00:00"), -12),  # no 商户订单号: its 账务流水号
        AccountLine("wd_bbbbbbbbbbbbbbbbbbbb", "转账", at("2026-12-03T23:59:59"), -1230),
    ]


def test_only_transfers_out_are_rail_transfers_and_money_back_makes_one_returned() -> None:
    returned = AlipayAccountRow("31005", "wd_bbbbbbbbbbbbbbbbbbbb", "转账", "2026-12-03 23:59:59", income="12.30")
    paid_in = AlipayAccountRow("31006", "someone", "转账", "2026-12-03 12:00:00", income="5.00")
    lines = parse_account(alipay_account_detail(PID, DAY, [*rows(), returned, paid_in]))
    transfers = account_transfers([line for line in lines if line.kind in TRANSFER_KINDS])
    assert transfers == [
        RailTransfer("wd_aaaaaaaaaaaaaaaaaaaa", s.TRANSFER_PAID, 950, "CNY"),
        RailTransfer("wd_bbbbbbbbbbbbbbbbbbbb", s.TRANSFER_RETURNED, 1230, "CNY"),
    ]


def test_a_cut_off_or_foreign_account_bill_is_refused() -> None:
    text = alipay_account_detail(PID, DAY, rows())
    with pytest.raises(BillError, match="summary's counts"):  # a row lost on the way is not a quiet day
        parse_account(text.replace("#支出合计：3笔", "#支出合计：4笔"))
    with pytest.raises(BillError, match="summary lines are missing"):
        parse_account("\r\n".join(row for row in text.split("\r\n") if "收入合计" not in row))
    with pytest.raises(BillError, match="a documented column is missing"):
        parse_account(text.replace("支出金额（-元）", "支出"))
    with pytest.raises(BillError, match="no 账务明细 file"):  # the trade bill is not the account bill
        parse_account_zip(alipay_zip(PID, DAY, [AlipayRow("1", "o", "交易", "1.00", "2026-12-03 09:00:00")]))
    with pytest.raises(BillError, match="not an amount"):
        parse_account(text.replace("-9.50", "-9.505"))


def test_a_stripe_transfer_is_ours_by_its_group_and_pays_what_reversals_left() -> None:
    made = {"id": "tr_1", "object": "transfer", "amount": 950, "amount_reversed": 0, "currency": "cny"}
    made |= {"created": 1764900000, "reversed": False, "transfer_group": "wd_cccccccccccccccccccc"}
    assert _record(made) == (1764900000, RailTransfer("wd_cccccccccccccccccccc", s.TRANSFER_PAID, 950, "CNY"))
    assert _record({**made, "amount_reversed": 100})[1].amount_cents == 850  # a partial reversal: less paid
    reversed_ = _record({**made, "amount_reversed": 950, "reversed": True})[1]
    assert reversed_.status == s.TRANSFER_RETURNED
    other = _record({**made, "transfer_group": None})[1]  # another integration's: found under its own id
    assert (other.number, other.status) == ("tr_1", s.TRANSFER_PAID)
