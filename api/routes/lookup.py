"""`POST /orders/lookup`: a buyer who lost their links asks for them by email.

The answer is the same whether or not the address has orders (202 `sent_if_any`), and the request
does the same work either way — check, count, queue one outbox row keyed by the buyer hash — so
neither the answer nor its timing tells who is a customer. The worker's dispatcher finds the orders
and sends the email, or nothing when there are none.
"""

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.client_ip import ruled_ip
from api.deps import StateDep
from api.schemas import EmailAddress
from api.state import State
from miaofa import lang
from miaofa.messaging import outbox
from miaofa.risk.limiters import client_bucket

router = APIRouter(tags=["shop"])


class LookupRequest(BaseModel):
    email: EmailAddress = Field(description="the address the orders were made with")
    lang: Literal["zh", "en"] | None = Field(default=None, description="the email's language; else Accept-Language")


class LookupAnswer(BaseModel):
    status: Literal["sent_if_any"]


@router.post(
    "/orders/lookup",
    status_code=202,
    response_model=LookupAnswer,
    responses={429: {"description": "too many lookups (Retry-After)"}},
)
async def lookup_orders(
    body: LookupRequest, request: Request, state: StateDep, accept_language: Annotated[str | None, Header()] = None
) -> JSONResponse:
    """Email the links to this address's orders (the latest 20), if it has any. The answer never says."""
    await send_links(state, request, body.email, lang.pick(body.lang, accept_language))
    return JSONResponse({"status": "sent_if_any"}, status_code=202)


async def send_links(state: State, request: Request, email: str, buyer_lang: str | None) -> None:
    """The lookup itself, for this route and the page's form (api/routes/web.py): TooManyRequests
    (429, Retry-After) past the rates, else one outbox row whether or not the address has orders."""
    ip = ruled_ip(request, state.settings)
    buyer_hash = state.vault.buyer_hash(email)
    state.lookup_rate.check(None if ip is None else client_bucket(ip), buyer_hash)
    async with state.sessionmaker.begin() as session:
        outbox.queue_lookup(session, buyer_hash, buyer_lang)
