"""A local WeChat Pay API v3 (Native pay) that speaks the real wire protocol with keys made in the test.

It checks our Authorization header with the merchant's public key, signs every answer with the platform
key (as a 微信支付公钥 named PUB_KEY_ID_…, or as a self-signed platform certificate it serves, AES-GCM
encrypted, at /v3/certificates), and sends signed, encrypted TRANSACTION.SUCCESS notifies when the test pays.
One state behind two hosts ("primary", "backup"), each of which the test can take down.
"""

import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from miaofa.gateways.config import WechatSettings
from miaofa.gateways.wechat_crypto import SCHEME, encrypt, rsa_sign, rsa_verify, signed_message

CHINA = timezone(timedelta(hours=8))
Mode = Literal["public_key", "certificate"]
_AUTH_RE = re.compile(r'(\w+)="([^"]*)"')
_OUT_TRADE_NO_RE = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def self_signed_certificate(key: rsa.RSAPrivateKey, serial: int, days: int = 365) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA (test)")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


@dataclass
class WechatKeys:
    """Everything both sides hold: the merchant's key pair and the platform's, as made by the test."""

    merchant_key: rsa.RSAPrivateKey
    platform_key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    mchid: str = "1900000109"
    appid: str = "wxd678efh567hg6787"
    merchant_serial: str = "3775B6A45ACD588826D15E583A95F5DD7B5A4E21"
    public_key_id: str = "PUB_KEY_ID_0119000001092025010100000000000001"
    apiv3_key: str = field(default_factory=lambda: secrets.token_hex(16))  # 32 ASCII bytes

    @classmethod
    def generate(cls) -> "WechatKeys":
        platform = new_rsa_key()
        return cls(new_rsa_key(), platform, self_signed_certificate(platform, x509.random_serial_number()))

    @property
    def certificate_serial(self) -> str:
        return format(self.certificate.serial_number, "X")

    def settings(self, base_url: str, backup_url: str, mode: Mode = "public_key") -> WechatSettings:
        public = (
            dict(public_key=public_pem(self.platform_key), public_key_id=self.public_key_id)
            if mode == "public_key"
            else {}
        )
        return WechatSettings(
            mchid=self.mchid,
            appid=self.appid,
            private_key=private_pem(self.merchant_key),
            cert_serial_no=self.merchant_serial,
            apiv3_key=self.apiv3_key,
            base_url=base_url,
            backup_url=backup_url,
            **public,
        )


@dataclass
class Trade:
    out_trade_no: str
    description: str
    notify_url: str
    total: int
    currency: str
    code_url: str
    state: str = "NOTPAY"
    success_time: str | None = None
    transaction_id: str | None = None
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)


class FakeWechat:
    def __init__(self, keys: WechatKeys, mode: Mode = "public_key") -> None:
        self.keys = keys
        self.mode = mode
        self.trades: dict[str, Trade] = {}
        self.down: set[str] = set()  # hosts answering 503
        self.drop_notifies = False
        self.sign_answers = True  # False: answers come unsigned (a man in the middle, a broken proxy)
        self.answer_key: rsa.RSAPrivateKey | None = None  # answers signed by this key instead of the platform's
        self.sent: list[tuple[bytes, dict[str, str]]] = []  # every notify built by pay(), sent or dropped
        self.refund_status = "PROCESSING"
        self.certificate_fetches = 0
        self.calls: list[tuple[str, str, str]] = []  # (host, method, path) of authenticated requests
        self.more_routes: list[tuple[str, Any, str]] = []  # (path, handler, method): other products' APIs

    @property
    def serial(self) -> str:
        return self.keys.public_key_id if self.mode == "public_key" else self.keys.certificate_serial

    # ---- what the test does ----

    async def pay(self, out_trade_no: str) -> httpx.Response | None:
        """The buyer pays: the trade is SUCCESS and its notify is sent (unless notifies are dropped)."""
        trade = self.trades[out_trade_no]
        trade.state = "SUCCESS"
        trade.success_time = datetime.now(CHINA).isoformat(timespec="seconds")
        trade.transaction_id = "4200" + secrets.token_hex(12)[:24]
        body, headers = self.notify(self.transaction(trade))
        self.sent.append((body, headers))
        if self.drop_notifies:
            return None
        async with httpx.AsyncClient(timeout=10) as http:
            return await http.post(trade.notify_url, content=body, headers=headers)

    def transaction(self, trade: Trade, **changes: Any) -> dict[str, Any]:
        """The transaction as WeChat shows it (query answer and notify resource)."""
        data: dict[str, Any] = {
            "appid": self.keys.appid,
            "mchid": self.keys.mchid,
            "out_trade_no": trade.out_trade_no,
            "trade_type": "NATIVE",
            "trade_state": trade.state,
            "trade_state_desc": trade.state,
            "attach": "",
            "amount": {"total": trade.total, "currency": trade.currency, "payer_currency": trade.currency},
        }
        if trade.transaction_id:
            data.update(
                transaction_id=trade.transaction_id,
                bank_type="OTHERS",
                success_time=trade.success_time,
                payer={"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            )
            data["amount"]["payer_total"] = trade.total
        return {**data, **changes}

    def notify(
        self,
        resource: dict[str, Any] | bytes,
        event_type: str = "TRANSACTION.SUCCESS",
        original_type: str = "transaction",
        *,
        apiv3_key: str | None = None,
        **sign: Any,
    ) -> tuple[bytes, dict[str, str]]:
        """A notify as WeChat sends it: the resource (a dict, or JSON text as is) AES-GCM encrypted, the body
        signed."""
        nonce = secrets.token_urlsafe(9)[:12]
        associated = original_type
        plain = resource if isinstance(resource, bytes) else json.dumps(resource, ensure_ascii=False).encode()
        ciphertext = encrypt((apiv3_key or self.keys.apiv3_key).encode(), nonce, associated, plain)
        envelope = {
            "id": str(uuid.uuid4()),
            "create_time": datetime.now(CHINA).isoformat(timespec="seconds"),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功" if event_type.startswith("TRANSACTION") else "退款成功",
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": ciphertext,
                "associated_data": associated,
                "nonce": nonce,
            },
        }
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        return body, {**self.signed_headers(body, **sign), "Content-Type": "application/json"}

    def signed_headers(
        self,
        body: bytes,
        *,
        key: rsa.RSAPrivateKey | None = None,
        serial: str | None = None,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = secrets.token_hex(16).upper()
        if signature is None:
            signature = rsa_sign(key or self.keys.platform_key, signed_message(ts, nonce, body))
        return {
            "Wechatpay-Serial": serial or self.serial,
            "Wechatpay-Signature": signature,
            "Wechatpay-Timestamp": ts,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature-Type": SCHEME,
        }

    # ---- the gateway ----

    def app(self, host: str) -> Starlette:
        def route(path: str, handler, method: str) -> Route:
            async def endpoint(request: Request) -> Response:
                if host in self.down:
                    return Response("upstream down", status_code=503)
                body = await request.body()
                if error := self._check_authorization(request, body):
                    return self._answer(401, {"code": "SIGN_ERROR", "message": error})
                self.calls.append((host, request.method, request.url.path))
                answer = handler(request, _json(body))
                if isinstance(answer, Response):  # a file (a bill), served as it is
                    return answer
                status, data = answer
                return self._answer(status, data)

            return Route(path, endpoint, methods=[method])

        return Starlette(
            routes=[
                route("/v3/pay/transactions/native", self._create, "POST"),
                route("/v3/pay/transactions/out-trade-no/{no}", self._query, "GET"),
                route("/v3/pay/transactions/out-trade-no/{no}/close", self._close, "POST"),
                route("/v3/refund/domestic/refunds", self._refund, "POST"),
                route("/v3/certificates", self._certificates, "GET"),
                *[route(path, handler, method) for path, handler, method in self.more_routes],
            ]
        )

    def _check_authorization(self, request: Request, body: bytes) -> str | None:
        header = request.headers.get("authorization", "")
        if not header.startswith(SCHEME + " "):
            return "missing or foreign authorization scheme"
        fields = dict(_AUTH_RE.findall(header[len(SCHEME) + 1 :]))
        if fields.get("mchid") != self.keys.mchid or fields.get("serial_no") != self.keys.merchant_serial:
            return "unknown merchant or certificate serial"
        if not fields.get("timestamp", "").isdigit() or abs(time.time() - int(fields["timestamp"])) > 300:
            return "timestamp outside 5 minutes"
        query = request.scope["query_string"].decode()
        path = request.scope["raw_path"].decode() + (f"?{query}" if query else "")
        signed = f"{request.method}\n{path}\n{fields['timestamp']}\n{fields.get('nonce_str', '')}\n"
        message = signed.encode() + body + b"\n"
        if not rsa_verify(self.keys.merchant_key.public_key(), message, fields.get("signature", "")):
            return "signature does not verify"
        return None

    def _answer(self, status: int, data: dict[str, Any] | None) -> Response:
        body = b"" if data is None else json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Request-ID": str(uuid.uuid4())}
        if self.sign_answers:
            headers.update(self.signed_headers(body, key=self.answer_key))
        return Response(
            body, status_code=status, headers=headers, media_type=None if data is None else "application/json"
        )

    def _create(self, request: Request, data: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        amount = data.get("amount") if isinstance(data.get("amount"), dict) else {}
        no, description = data.get("out_trade_no"), data.get("description")
        valid = (
            data.get("appid") == self.keys.appid
            and data.get("mchid") == self.keys.mchid
            and isinstance(no, str)
            and _OUT_TRADE_NO_RE.fullmatch(no)
            and isinstance(description, str)
            and 0 < len(description) <= 127
            and type(amount.get("total")) is int
            and amount["total"] > 0
            and amount.get("currency") == "CNY"
            and isinstance(data.get("notify_url"), str)
            and "?" not in data["notify_url"]
            and _rfc3339(data.get("time_expire"))
        )
        if not valid:
            return 400, {"code": "PARAM_ERROR", "message": "参数错误"}
        trade = self.trades.get(no)
        if trade is not None:
            same = (trade.total, trade.description, trade.notify_url) == (
                amount["total"],
                description,
                data["notify_url"],
            )
            return (
                (200, {"code_url": trade.code_url})
                if same
                else (400, {"code": "INVALID_REQUEST", "message": "订单号重复"})
            )
        trade = Trade(
            no,
            description,
            data["notify_url"],
            amount["total"],
            "CNY",
            "weixin://wxpay/bizpayurl?pr=" + secrets.token_urlsafe(6),
        )
        self.trades[no] = trade
        return 200, {"code_url": trade.code_url}

    def _query(self, request: Request, data: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        if request.query_params.get("mchid") != self.keys.mchid:
            return 400, {"code": "PARAM_ERROR", "message": "mchid"}
        trade = self.trades.get(request.path_params["no"])
        if trade is None:
            return 404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"}
        return 200, self.transaction(trade)

    def _close(self, request: Request, data: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        if data.get("mchid") != self.keys.mchid:
            return 400, {"code": "PARAM_ERROR", "message": "mchid"}
        trade = self.trades.get(request.path_params["no"])
        if trade is None:
            return 404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"}
        if trade.state in ("SUCCESS", "REFUND"):
            return 400, {"code": "ORDERPAID", "message": "订单已支付"}
        trade.state = "CLOSED"
        return 204, None

    def _refund(self, request: Request, data: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        amount = data.get("amount") if isinstance(data.get("amount"), dict) else {}
        trade = self.trades.get(data.get("out_trade_no"))  # type: ignore[arg-type]
        refund_no = data.get("out_refund_no")
        if trade is None:
            return 404, {"code": "RESOURCE_NOT_EXISTS", "message": "订单不存在"}
        if (
            not isinstance(refund_no, str)
            or type(amount.get("refund")) is not int
            or (amount.get("total"), amount.get("currency")) != (trade.total, "CNY")
        ):
            return 400, {"code": "PARAM_ERROR", "message": "参数错误"}
        if refund_no in trade.refunds:  # the same out_refund_no is the same refund
            done = trade.refunds[refund_no]
            if done["amount"]["refund"] != amount["refund"]:
                return 400, {"code": "INVALID_REQUEST", "message": "退款单号重复"}
            return 200, done
        already = sum(r["amount"]["refund"] for r in trade.refunds.values())
        if trade.state not in ("SUCCESS", "REFUND") or not 0 < amount["refund"] <= trade.total - already:
            return 403, {"code": "NOT_ENOUGH", "message": "可退金额不足"}
        trade.refunds[refund_no] = {
            "refund_id": "5030" + secrets.token_hex(12),
            "out_refund_no": refund_no,
            "transaction_id": trade.transaction_id,
            "out_trade_no": trade.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": datetime.now(CHINA).isoformat(timespec="seconds"),
            "status": self.refund_status,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": trade.total,
                "refund": amount["refund"],
                "payer_total": trade.total,
                "payer_refund": amount["refund"],
                "currency": "CNY",
            },
        }
        trade.state = "REFUND"
        return 200, trade.refunds[refund_no]

    def _certificates(self, request: Request, data: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        self.certificate_fetches += 1
        if self.mode != "certificate":
            return 404, {"code": "NOT_FOUND", "message": "use the public key"}
        cert = self.keys.certificate
        nonce = secrets.token_hex(6)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        return 200, {
            "data": [
                {
                    "serial_no": self.keys.certificate_serial,
                    "effective_time": cert.not_valid_before_utc.astimezone(CHINA).isoformat(timespec="seconds"),
                    "expire_time": cert.not_valid_after_utc.astimezone(CHINA).isoformat(timespec="seconds"),
                    "encrypt_certificate": {
                        "algorithm": "AEAD_AES_256_GCM",
                        "nonce": nonce,
                        "associated_data": "certificate",
                        "ciphertext": encrypt(self.keys.apiv3_key.encode(), nonce, "certificate", pem),
                    },
                }
            ]
        }


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _rfc3339(value: object) -> bool:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d([+-]\d\d:\d\d|Z)", value):
        return False
    return datetime.fromisoformat(value).tzinfo is not None
