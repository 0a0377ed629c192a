"""Each real gateway's settings, nested under its name: MIAOFA_ALIPAY__APP_ID, MIAOFA_WECHAT__MCHID, ….

A gateway with none of its required settings is simply off. One with some but not all, or with a
placeholder, stops every command at start with the setting's name: half a gateway is a mistake,
not a choice. Keys are PEM text (real or "\\n"-escaped newlines), bare base64 DER as the Alipay
console shows it, or "@/path/to/file".
"""

from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationInfo, field_validator, model_validator

from miaofa.netaddr import loopback_host

PLACEHOLDERS = {"changethis", "changeme", "secret", "xxx", "todo", "your-key-here"}


def read_key_text(value: str) -> str:
    """The text of a key setting: the file's content for "@/path", with "\\n" escapes turned into newlines."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text()
        except OSError as exc:
            raise ValueError(f"cannot read {value[1:]!r} ({type(exc).__name__})") from None
    return value.replace("\\n", "\n")


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    required: ClassVar[tuple[str, ...]]
    # The gateway's hosts: HTTPS only (keys, signed links and pay URLs travel there), loopback excepted
    # for tests and local fakes.
    urls: ClassVar[tuple[str, ...]] = ()

    @field_validator("*")
    @classmethod
    def _not_blank(cls, value: object, info: ValidationInfo) -> object:
        # A key of spaces would turn the gateway on, and md5(content + " ") is anybody's signature.
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str) and text and not text.strip():
            raise ValueError("is blank")
        if isinstance(text, str) and text and info.field_name in cls.urls and not _https_or_loopback(text):
            raise ValueError("must be an https:// URL (http:// only to a loopback address)")
        return value

    def configured(self) -> bool:
        return any(self._value(field) for field in self.required)

    def missing(self) -> list[str]:
        return [self.env_name(field) for field in self.required if not self._value(field)]

    @classmethod
    def env_name(cls, field: str) -> str:
        return f"MIAOFA_{cls.name.upper()}__{field.upper()}"

    def _value(self, field: str) -> str:
        value = getattr(self, field)
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value or "")

    @model_validator(mode="after")
    def _complete_or_off(self) -> "GatewaySettings":
        if not self.configured():
            return self
        missing = self.missing()
        if missing:
            raise ValueError(f"{missing[0]} is missing (the {self.name} gateway is half configured)")
        for field in self.required:
            if self._value(field).strip().lower() in PLACEHOLDERS:
                raise ValueError(f"{self.env_name(field)} is a placeholder")
        return self


def _https_or_loopback(url: str) -> bool:
    parsed = urlparse(url)
    if parsed.scheme == "https" and parsed.hostname:
        return True
    return parsed.scheme == "http" and loopback_host(parsed.hostname or "")


class AlipaySettings(GatewaySettings):
    name = "alipay"
    required = ("app_id", "private_key", "alipay_public_key", "seller_id")
    urls = ("gateway_url",)

    app_id: str = ""
    private_key: SecretStr = SecretStr("")  # the app's RSA2 private key
    alipay_public_key: str = ""  # Alipay's public key (public-key mode), from the open platform console
    seller_id: str = ""  # the merchant's PID (2088…); a notify for another seller is not ours
    gateway_url: str = "https://openapi.alipay.com/gateway.do"
    product: Literal["page", "precreate"] = "page"  # 电脑网站支付, or 当面付 QR code


class WechatSettings(GatewaySettings):
    name = "wechat"
    required = ("mchid", "appid", "private_key", "cert_serial_no", "apiv3_key")
    urls = ("base_url", "backup_url")

    mchid: str = ""
    appid: str = ""
    private_key: SecretStr = SecretStr("")  # the merchant API certificate's private key
    cert_serial_no: str = ""  # serial of the merchant API certificate
    apiv3_key: SecretStr = SecretStr("")  # 32 characters; decrypts notify resources
    public_key: str = ""  # WeChat Pay's public key (微信支付公钥); unset: platform certificates are fetched
    public_key_id: str = ""  # PUB_KEY_ID_…, the Wechatpay-Serial that names public_key
    base_url: str = "https://api.mch.weixin.qq.com"
    backup_url: str = "https://api2.wechatpay.cn"  # queried when the primary host fails

    @field_validator("apiv3_key")
    @classmethod
    def _apiv3_key_length(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value().encode()) != 32:
            raise ValueError("must be 32 bytes")
        return value

    @model_validator(mode="after")
    def _public_key_pair(self) -> "WechatSettings":
        if bool(self.public_key) != bool(self.public_key_id):
            raise ValueError("MIAOFA_WECHAT__PUBLIC_KEY and MIAOFA_WECHAT__PUBLIC_KEY_ID go together")
        return self


class StripeSettings(GatewaySettings):
    name = "stripe"
    required = ("secret_key", "webhook_secret")
    urls = ("api_base",)  # the secret key travels in its Authorization header

    secret_key: SecretStr = SecretStr("")  # sk_live_… or sk_test_…
    webhook_secret: SecretStr = SecretStr("")  # whsec_…, of the webhook endpoint
    api_base: str = "https://api.stripe.com"
    tolerance_seconds: int = 300  # how old a signed webhook may be

    @field_validator("webhook_secret")
    @classmethod
    def _more_than_the_prefix(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret.startswith("whsec_") and not secret.removeprefix("whsec_").strip():
            raise ValueError("is only the whsec_ prefix; set the endpoint's whole signing secret")
        return value


class EpaySettings(GatewaySettings):
    name = "epay"
    required = ("api_url", "pid", "key")
    urls = ("api_url",)  # the key travels in query URLs

    api_url: str = ""  # the operator's base URL, ending with "/" (submit.php, api.php live under it)
    pid: str = ""  # merchant id
    key: SecretStr = SecretStr("")  # the MD5 signing key; also sent in query URLs, so HTTPS only
    pay_type: str = "alipay"  # alipay | wxpay | qqpay | …, as the operator offers


class EpusdtSettings(GatewaySettings):
    name = "epusdt"
    required = ("api_url", "api_token")
    urls = ("api_url",)  # its answer holds the buyer's pay link

    api_url: str = ""  # the epusdt server's base URL
    api_token: SecretStr = SecretStr("")  # api_auth_token, the MD5 signing key


GATEWAY_SETTINGS: tuple[type[GatewaySettings], ...] = (
    AlipaySettings,
    WechatSettings,
    StripeSettings,
    EpaySettings,
    EpusdtSettings,
)
