"""All settings in one place, read from the environment with the MIAOFA_ prefix."""

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from miaofa.gateways.config import (
    AlipaySettings,
    EpaySettings,
    EpusdtSettings,
    GatewaySettings,
    StripeSettings,
    WechatSettings,
)
from miaofa.netaddr import networks_problem, webhook_host_problem
from miaofa.risk.rules import Rules, RulesError, load
from miaofa.text import key_problem, secret_problem, url_problem


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIAOFA_", extra="ignore", env_nested_delimiter="__")

    data_dir: Path = Path("data")
    database_url: str = ""
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233
    temporal_ui_writes: bool = False  # `miaofa up`: the UI may signal, update, terminate … (else read-only)
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str = ""  # the shop as buyers reach it (links in emails)
    notify_base_url: str = ""  # the API as gateways reach it (notify URLs); defaults to public_url
    sim_host: str = "127.0.0.1"
    sim_port: int = 8010
    pg_port: int = 54329
    sim_url: str = "http://127.0.0.1:8010"
    sim_public_url: str = ""  # the simulator as buyers' browsers reach it (pay links); defaults to sim_url
    sim_merchant_id: str = "miaofa-demo"
    sim_secret: str = ""  # unset: no simulator gateway (miaofa up generates one for the demo)
    sim_control_token: str = ""  # bearer token of the simulator's /control; unset: /control refused
    admin_token: str = ""
    support_token: str = ""
    staff_token: str = ""  # the token `miaofa support` sends: a named one (miaofa tokens add); else SUPPORT_TOKEN
    staff_api_url: str = ""  # the API as `miaofa support` reaches it; defaults to api_url
    vault_key: str = ""
    payment_window_seconds: int = 900
    callback_grace_seconds: int = 15
    poll_interval_seconds: int = 2
    late_payment_watch_seconds: int = 86400
    support_window_seconds: int = 7 * 86400
    update_timeout_seconds: float = 30  # how long the API waits for a workflow's answer
    # Creating an order's payment is retried with a backoff this long before the order is cancelled
    # (gateway_unavailable); keep it under UPDATE_TIMEOUT_SECONDS, so the buyer hears the outcome.
    payment_create_retry_seconds: float = Field(default=10, gt=0, le=300)
    worker_metrics_address: str = "127.0.0.1:9464"  # the worker's Prometheus /metrics; "" turns it off
    smtp_url: str = ""
    mail_from: str = "Miaofa <shop@miaofa.localhost>"
    mail_catcher_port: int = 1025  # `miaofa up` without SMTP_URL: a local catch-all SMTP server, mail under data/mail/
    webhook_url: str = ""  # merchant webhook for order events (a product's own webhook_url wins); http(s) only
    webhook_secret: str = ""  # signs webhooks (Miaofa-Signature); required with any webhook URL
    # CIDRs webhooks may reach although not public (a receiver on the LAN; the tests' 127.0.0.0/8).
    # Loopback, private, link-local, multicast and metadata addresses are refused otherwise.
    webhook_allow_networks: str = ""
    lookup_rate_per_ip_per_minute: int = 5  # POST /orders/lookup per client address (per API process)
    lookup_rate_per_email_per_hour: int = 3  # POST /orders/lookup per email (per API process)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one JSON object a line, with order and workflow ids
    tracing: Literal["none", "console", "otlp"] = "none"  # OpenTelemetry spans: API → workflow → activities
    otlp_endpoint: str = ""  # with tracing=otlp: the collector's OTLP/HTTP traces URL (default localhost:4318)
    max_json_body_bytes: int = 64 * 1024  # every request body not listed below (JSON APIs)
    max_notify_body_bytes: int = 64 * 1024  # a gateway notify
    max_codec_body_bytes: int = 4 * 1024 * 1024  # payloads the Temporal UI sends to /codec
    rejected_notify_log_per_second: float = 5  # per gateway; rejected notifies past it are counted, not stored
    late_poll_interval_seconds: int = 60  # during the late-payment watch; doubles up to an hour
    reconcile_interval_seconds: int = 600  # how often the reconcile schedule runs
    hold_release_interval_seconds: int = Field(default=300, ge=1)  # how often due holds move to available
    coupon_cost_payer: Literal["platform", "merchant"] = "platform"  # who pays a late-delivery coupon
    reconcile_lookback_seconds: int = 2 * 86400  # the statement window each run compares
    reconcile_grace_seconds: int = 120  # payments younger than this may still be on their way in
    up_workers: int = Field(default=1, ge=1, le=16)  # worker processes `miaofa up` runs
    up_apis: int = Field(default=1, ge=1, le=16)  # API processes `miaofa up` runs, all on API_PORT
    api_reuse_port: bool = False  # bind API_PORT with SO_REUSEPORT (`miaofa up` sets it for UP_APIS > 1)
    # Order starts in flight (README "Capacity"): past either bound POST /orders answers 503 busy at once,
    # with Retry-After. 0 turns a bound off. The total is shared by all API processes (PostgreSQL).
    order_starts_per_process: int = Field(default=4, ge=0)  # measured: docs/benchmarks.md
    order_starts_total: int = Field(default=0, ge=0)
    busy_retry_after_seconds: int = Field(default=2, ge=1, le=60)
    # The per-buyer rates (RISK_RATE_*) counted in PostgreSQL too, so N API processes do not give N× the
    # limit; the in-process windows stay as a flood brake before any database round trip.
    risk_shared_rates: bool = True
    # Temporal's sandbox re-imports workflow code per new workflow; the tests run it sandboxed (worker.py)
    workflow_sandbox: bool = False
    # Order admission (miaofa/risk/, defaults of its rules), cheapest first; 0 turns a rule off. "Open"
    # = awaiting payment or in review.
    risk_rate_per_ip_per_minute: int = 20  # order attempts per client address (sliding minute, all API processes)
    risk_rate_per_email_per_minute: int = 5  # order attempts per buyer email (sliding minute, all API processes)
    risk_max_open_orders_per_email: int = 3  # unpaid orders one buyer email may hold at once
    risk_max_open_orders_per_ip: int = 10  # unpaid orders one client address may hold at once
    risk_max_open_units_per_ip: int = 20  # units those unpaid orders of one client address may hold
    risk_max_open_orders_per_buyer_product: int = 2  # unpaid orders of one email for one product
    risk_max_units_per_buyer_per_product: int = 10  # units of one product: this order + that email's unpaid ones
    risk_max_open_units_per_net56: int = 40  # unpaid units of an IPv6 client's /56 (a home: 256 /64s)
    risk_max_open_units_per_net48: int = 80  # unpaid units of an IPv6 client's /48 (a site, a 6to4 prefix)
    # Past this share of a product's unsold keys held unpaid, an order is admitted only from a buyer and
    # network holding none of it unpaid, for one unit: a cap that does not grow with addresses.
    risk_max_unpaid_share: float = Field(default=0.5, ge=0, le=1)
    risk_exempt_networks: str = ""  # CIDRs whose clients skip the admission rules and caps (a load generator)
    risk_rate_per_device_per_minute: int = 5  # order attempts per X-Device-Id (sliding minute, all API processes)
    risk_new_device_review_cents: int = 50000  # above this, a device new to the email's delivered orders: review
    risk_history_multiple: float = 10  # above N × the median of the email's delivered orders: review
    risk_rules_file: str = ""  # a TOML rules file over these defaults (miaofa/risk/rules.py), re-read on change
    review_window_seconds: int = 1800  # an order held for review and not decided by then is rejected
    trusted_proxies: str = ""  # CIDRs of reverse proxies whose X-Forwarded-For names the client; none by default
    sse_max_streams_per_ip: int = 8  # live order-event streams per client address (per API process)
    sse_max_streams_per_order: int = 5  # live streams watching one order (per API process)
    sse_max_streams: int = 1000  # live order-event streams in all (per API process)
    sse_feed_interval_seconds: float = 0.5  # the streams' one change feed reads the watched orders this often
    check_payment_interval_seconds: float = 5  # "I have paid" asks the gateway at most this often per order
    # Payouts (README "Withdrawals"). Amounts in minor units; 0 in a threshold means "no review".
    payout_min_cents: int = Field(default=100, ge=1)  # the smallest withdrawal
    payout_fee_cents: int = Field(default=0, ge=0)  # a flat fee per withdrawal, kept from the amount sent
    payout_fee_bps: int = Field(default=0, ge=0, le=10000)  # plus this share of the amount
    payout_auto_approve_cents: int = Field(default=100000, ge=0)  # above: platform finance approves it
    payout_two_person_cents: int = Field(default=1000000, ge=0)  # above: two different people approve it
    payout_new_destination_delay_seconds: int = Field(default=86400, ge=0)  # cooling-off of a new destination
    payout_review_sla_seconds: int = Field(default=4 * 3600, ge=1)  # past it, the timeline says review is late
    payout_confirm_timeout_seconds: int = Field(default=86400, ge=1)  # a payee who has not confirmed: cancel
    payout_query_interval_seconds: float = Field(default=5, gt=0)  # an unclear answer: ask again, doubling
    payout_query_max_interval_seconds: float = Field(default=3600, gt=0)
    payout_return_watch_seconds: int = Field(default=7 * 86400, ge=0)  # after paid: a bank may still return it
    payout_return_poll_seconds: float = Field(default=6 * 3600, gt=0)
    payout_rail_timeout_seconds: float = Field(default=10, gt=0)  # one call to a rail; past it: unknown
    payout_alipay: bool = False  # offer Alipay 单笔转账 (needs the platform's Alipay app and that product)
    payout_wechat: bool = False  # offer WeChat 商家转账 (needs the platform's WeChat Pay merchant and that product)
    payout_stripe: bool = False  # offer Stripe Connect transfers to the merchant's connected account (acct_…)
    payout_wechat_scene_id: str = "1005"  # the transfer scene signed for at WeChat (1005: 佣金报酬)
    payout_wechat_scene_report: str = "岗位类型=店铺经营者;报酬说明=店铺销售结算"  # the scene's report, type=text;…

    @field_validator("risk_rules_file")
    @classmethod
    def _rules_file_usable(cls, value: str) -> str:
        if value:
            try:
                load(value, Rules())
            except RulesError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("risk_exempt_networks", "trusted_proxies", "webhook_allow_networks")
    @classmethod
    def _networks_parse(cls, value: str) -> str:
        if problem := networks_problem(value):
            raise ValueError(problem)
        return value

    # Real gateways, each off until its required settings are all set (miaofa/gateways/config.py).
    alipay: AlipaySettings = AlipaySettings()
    wechat: WechatSettings = WechatSettings()
    stripe: StripeSettings = StripeSettings()
    epay: EpaySettings = EpaySettings()
    epusdt: EpusdtSettings = EpusdtSettings()

    def gateway_settings(self) -> list[GatewaySettings]:
        return [self.alipay, self.wechat, self.stripe, self.epay, self.epusdt]

    @field_validator("admin_token", "support_token", "staff_token", "sim_control_token", "sim_secret", "webhook_secret")
    @classmethod
    def _secret_real(cls, value: str, info: ValidationInfo) -> str:
        kind = "token" if (info.field_name or "").endswith("_token") else "secret"
        if value and (problem := secret_problem(value, kind)):
            raise ValueError(problem)
        return value

    @field_validator("vault_key")
    @classmethod
    def _vault_key_decodes(cls, value: str) -> str:
        # Checked here, so a bad key stops every command at start rather than at the first order.
        if value and (problem := key_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url_http(cls, value: str) -> str:
        if value and (problem := url_problem(value)):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> "Settings":
        if self.webhook_url and not self.webhook_secret:
            raise ValueError("MIAOFA_WEBHOOK_URL is set without MIAOFA_WEBHOOK_SECRET; webhooks must be signed")
        host = urlparse(self.webhook_url).hostname or ""
        if self.webhook_url and (problem := webhook_host_problem(host, self.webhook_allow_networks)):
            raise ValueError(f"MIAOFA_WEBHOOK_URL {problem}")
        return self

    @field_validator("api_port", "sim_port", "pg_port", "temporal_ui_port", "mail_catcher_port")
    @classmethod
    def _port_in_range(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError("must be a port number between 1 and 65535")
        return value

    @property
    def api_url(self) -> str:
        return self.public_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def notify_url_base(self) -> str:
        return self.notify_base_url or self.api_url


@lru_cache
def get_settings() -> Settings:
    return Settings()
