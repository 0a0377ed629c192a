"""The FastAPI app: lifespan-built state, routers, one error renderer."""

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from temporalio.client import Client

from api import docs, errors, http_metrics, limits
from api.console import pages as console_pages
from api.console import routes as console
from api.csrf import Csrf
from api.front_gate import FrontGate
from api.merchant_directory import MerchantDirectory
from api.order_feed import OrderFeed
from api.routes import (
    admin,
    codec,
    health,
    lookup,
    merchant,
    merchant_coupons,
    merchant_gateways,
    merchant_webhook,
    merchants_admin,
    money,
    order_events,
    payments,
    shop,
    support,
    web,
    withdrawals,
)
from api.state import State
from api.stock_events import StockEvents
from api.stock_hint import StockHint
from miaofa import contract
from miaofa.crypto.vault import Vault
from miaofa.db.engine import make_engine, make_sessionmaker
from miaofa.direct.book import GatewayBook
from miaofa.gateways.registry import build_gateways
from miaofa.rate_bound import RateBound
from miaofa.risk.chain import Chain
from miaofa.risk.limiters import Guards, LookupRate
from miaofa.settings import Settings
from miaofa.telemetry import tracing
from miaofa.temporal.client import codec_for, connect

log = logging.getLogger("miaofa.api")


def create_app(settings: Settings, *, temporal: Client | None = None, task_queue: str = contract.TASK_QUEUE) -> FastAPI:
    """Build the app. Tests pass their own Temporal client (dev server or time-skipping)."""
    tracing.setup(settings, "miaofa-api")  # before the client: its interceptor traces into this

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        vault = Vault(settings.vault_key)
        engine = make_engine(settings.database_url, pool_size=20)
        sessionmaker = make_sessionmaker(engine)
        client = temporal or await connect(settings, vault)
        gateways = build_gateways(settings)
        stock_hint = StockHint(sessionmaker)
        await stock_hint.refresh()
        stock_hint.start()
        stock_events = StockEvents(engine, stock_hint)
        stock_events.start()
        chain = Chain(settings)
        gate = FrontGate(settings, sessionmaker, chain)
        await gate.start()
        app.state.miaofa = State(
            settings=settings,
            vault=vault,
            engine=engine,
            sessionmaker=sessionmaker,
            temporal=client,
            codec=codec_for(vault),
            gateways=gateways,
            hot=stock_hint,
            task_queue=task_queue,
            chain=chain,
            guards=Guards(settings),
            feed=OrderFeed(
                sessionmaker,
                settings.sse_feed_interval_seconds,
                settings.sse_max_streams_per_order,
                settings.sse_max_streams,
            ),
            lookup_rate=LookupRate(settings),
            rejected_notifies=RateBound(settings.rejected_notify_log_per_second),
            csrf=Csrf(vault.form_key, origins=[settings.api_url], secure=settings.api_url.startswith("https:")),
            shops=MerchantDirectory(sessionmaker),
            book=GatewayBook(settings, sessionmaker, vault, gateways),
            gate=gate,
        )
        try:
            yield
        finally:
            await stock_events.stop()
            await stock_hint.stop()
            await gate.stop()
            await app.state.miaofa.feed.stop()
            for gateway in gateways.values():
                await gateway.aclose()
            await app.state.miaofa.book.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Miaofa 秒发",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Automatic card-key delivery; every order is a durable Temporal workflow.",
        responses=errors.ERROR_RESPONSES,
    )
    docs.install(app)  # /docs and /redoc with their assets served locally
    errors.install(app)
    errors.install_schema(app)
    # Middleware, outermost last: metrics count everything; CORS headers go on every answer to the UI,
    # refusals included; tokens and body sizes are checked before any route or body parser runs.
    app.add_middleware(limits.RequestLimits, settings=settings)
    ui = settings.temporal_ui_port
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[f"http://localhost:{ui}", f"http://127.0.0.1:{ui}"],
        allow_methods=["POST", "GET"],
        allow_headers=["*"],
        allow_credentials=True,
    )
    http_metrics.install(app)
    if tracing.enabled():  # outermost: a request's span is the parent of the workflow it starts
        app.add_middleware(tracing.HttpSpans, tracer=tracing.tracer())
    routers = (health, admin, merchants_admin, merchant, merchant_gateways, lookup)
    for module in (*routers, shop, order_events, payments, support, codec, web):
        app.include_router(module.router)
    app.include_router(money.merchant_router)
    app.include_router(merchant_webhook.router)
    app.include_router(merchant_coupons.router)
    app.include_router(money.admin_router)
    app.include_router(withdrawals.merchant_router)
    app.include_router(withdrawals.admin_router)
    app.include_router(console.router)  # the merchant console's pages (hidden from the schema)
    app.mount("/static", StaticFiles(directory=web.STATIC), name="static")  # the buyer pages' CSS and JS
    app.mount("/console/static", StaticFiles(directory=console_pages.STATIC), name="console-static")
    return app
