"""Direct settlement without a stack: the judge's account rule, and each gateway's credential checks and masks."""

import pytest

from miaofa import steps as s
from miaofa.crypto.vault import Vault, new_vault_key
from miaofa.db.models import Order, Payment
from miaofa.direct import credentials
from miaofa.errors import InvalidInput
from miaofa.gateways.config import StripeSettings
from miaofa.payments.proof import FOREIGN, NO_ORDER_HERE, OTHER_ACCOUNT, Accounts, Judgement, Proof, judge


def _paid(order_id: str = "o1") -> Proof:
    return Proof("p1", order_id, "paid", 990, "CNY", None, "acct")


def _order() -> tuple[Order, Payment]:
    order = Order(id="o1", amount_cents=990, currency="CNY", gateway="simulator", status="awaiting_payment")
    return order, Payment(order_id="o1", payment_id="p1", amount_cents=990, currency="CNY", status="pending")


@pytest.mark.parametrize(
    ("accounts", "expected"),
    [
        (Accounts(route=None, order=None), Judgement(s.ACCEPTED)),  # the platform's, as before
        (Accounts(route="m_a", order="m_a"), Judgement(s.ACCEPTED)),  # a merchant's own order at its own URL
        (Accounts(route="m_a", order="m_b"), Judgement(FOREIGN, OTHER_ACCOUNT)),  # A's keys, B's order
        (Accounts(route=None, order="m_b"), Judgement(FOREIGN, OTHER_ACCOUNT)),  # platform keys, B's order
        (Accounts(route="m_b", order=None), Judgement(FOREIGN, OTHER_ACCOUNT)),  # B's keys, a platform order
    ],
)
def test_one_accounts_keys_speak_only_for_its_own_orders(accounts: Accounts, expected: Judgement) -> None:
    order, payment = _order()
    assert judge(order, payment, _paid(), gateway="simulator", merchant_id="acct", accounts=accounts) == expected


def test_a_merchant_account_has_no_strays_of_the_platform() -> None:
    unknown = judge(None, None, _paid("nosuch"), gateway="simulator", accounts=Accounts("m_a", None))
    assert unknown == Judgement(FOREIGN, NO_ORDER_HERE)
    assert judge(None, None, _paid("nosuch"), gateway="simulator", accounts=Accounts(None, None)).verdict == s.STRAY


STRIPE = {"secret_key": "sk_test_" + "4" * 24 + "wxyz", "webhook_secret": "whsec_" + "9" * 30}
EPAY = {"api_url": "https://pay.example.com/", "pid": "1001", "key": "k" * 28 + "tail"}
WECHAT_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEv" + "A" * 60 + "QZ9x\n-----END PRIVATE KEY-----\n"
WECHAT = {"mchid": "1900", "appid": "wx1", "private_key": WECHAT_KEY, "cert_serial_no": "AB", "apiv3_key": "v" * 32}


def test_each_gateway_takes_its_own_fields_and_shows_only_a_mask() -> None:
    stripe = credentials.check("stripe", STRIPE, StripeSettings(api_base="http://127.0.0.1:9"))
    assert isinstance(stripe, StripeSettings) and stripe.api_base == "http://127.0.0.1:9"  # the platform's host
    assert credentials.summary("stripe", stripe) == "secret_key …wxyz"
    epay = credentials.check("epay", EPAY, None)
    assert credentials.summary("epay", epay) == "1001 key …tail"
    sim = credentials.check("simulator", {"merchant_id": "acct-1", "secret": "s" * 20 + "abcd"}, None)
    assert credentials.summary("simulator", sim) == "acct-1 secret …abcd"
    short = credentials.check("simulator", {"merchant_id": "acct-1", "secret": "s" * 16}, None)
    assert credentials.summary("simulator", short) == "acct-1 secret …ssss"
    wechat = credentials.check("wechat", WECHAT, None)
    assert credentials.summary("wechat", wechat) == "1900 apiv3_key …vvvv"
    for gateway, fields in (("stripe", STRIPE), ("epay", EPAY)):
        assert not any(
            v in credentials.summary(gateway, credentials.check(gateway, fields, None))
            for v in (STRIPE["webhook_secret"], EPAY["key"], STRIPE["secret_key"])
        )


@pytest.mark.parametrize(
    ("gateway", "fields", "said"),
    [
        ("stripe", {"secret_key": STRIPE["secret_key"]}, "webhook_secret"),
        ("stripe", {**STRIPE, "api_base": "http://evil.example"}, "not a field"),  # the host stays the platform's
        ("epay", {**EPAY, "api_url": "http://127.0.0.1:8000/"}, "public"),  # no merchant host on loopback
        ("epay", {**EPAY, "api_url": "https://169.254.169.254/"}, "public"),  # nor the metadata service
        ("epay", {**EPAY, "key": "changeme"}, "key is a placeholder"),
        ("epay", {**EPAY, "key": "   "}, "blank"),
        (
            "wechat",
            {"mchid": "1", "appid": "wx", "private_key": WECHAT_KEY, "cert_serial_no": "AB", "apiv3_key": "short"},
            "32 bytes",
        ),
        ("simulator", {"merchant_id": "a", "secret": "short"}, "secret"),
        ("wechat", {**WECHAT, "private_key": "@/etc/passwd"}, "not a file"),
        ("alipay", {"app_id": "2021"}, "required"),
    ],
)
def test_bad_credentials_are_refused_by_field_never_by_value(gateway: str, fields: dict, said: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        credentials.check(gateway, fields, None)
    assert said in str(refused.value.detail)
    for value in fields.values():
        if len(value) >= 8:
            assert value not in str(refused.value.detail)


def test_sealed_credentials_open_only_for_their_own_merchant_and_gateway() -> None:
    vault = Vault(new_vault_key())
    sealed = vault.seal('{"secret": "x"}', "merchant-gateway:m_a:simulator")
    assert vault.unseal(sealed, "merchant-gateway:m_a:simulator") == '{"secret": "x"}'
    for other in ("merchant-gateway:m_b:simulator", "merchant-gateway:m_a:epay"):
        with pytest.raises(Exception):  # noqa: B017 (cryptography's InvalidTag)
            vault.unseal(sealed, other)
