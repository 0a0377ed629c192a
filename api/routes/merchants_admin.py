"""The platform admin's side of merchants: create, list, suspend, resume; keys flagged as possible
double sales across shops."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field, StrictInt

from api.deps import AdminDep, SessionDep, StateDep
from api.schemas import Plain
from miaofa.merchants import accounts

router = APIRouter(prefix="/admin", tags=["merchants"])

Slug = Annotated[str, Path(min_length=2, max_length=32, pattern=accounts.SLUG.pattern)]


class MerchantCreate(BaseModel):
    slug: str = Field(min_length=2, max_length=32, pattern=accounts.SLUG.pattern)
    name: Annotated[str, Plain] = Field(min_length=1, max_length=100)
    settlement: Literal["platform", "direct"] = "platform"
    fee_bps: StrictInt = Field(default=0, ge=0, le=10000, description="the platform fee, basis points (250 = 2.5 %)")
    hold_seconds: StrictInt = Field(default=0, ge=0, le=accounts.MAX_HOLD_SECONDS)


class MerchantCreated(BaseModel):
    merchant_id: str
    slug: str
    owner_token: str = Field(description="shown this once; only its keyed hash is kept")


class TermsBody(BaseModel):
    fee_bps: StrictInt = Field(ge=0, le=10000, description="the platform fee, basis points, for later sales")
    hold_seconds: StrictInt = Field(ge=0, le=accounts.MAX_HOLD_SECONDS, description="the hold after each later sale")


class StatusBody(BaseModel):
    reason: Annotated[str, Plain] = Field(default="", max_length=300, description="words the merchant reads")


@router.post("/merchants", status_code=201)
async def create_merchant(
    body: MerchantCreate, actor: AdminDep, session: SessionDep, state: StateDep
) -> MerchantCreated:
    """Open a shop; its owner's token is in this answer and nowhere else."""
    made = await accounts.create(session, state.vault, created_by=actor, **body.model_dump())
    return MerchantCreated(merchant_id=made.merchant.id, slug=made.merchant.slug, owner_token=made.owner_token)


@router.get("/merchants")
async def list_merchants(_: AdminDep, session: SessionDep) -> dict[str, Any]:
    return {"merchants": [accounts.public(m) for m in await accounts.listing(session)]}


@router.post("/merchants/{slug}/suspend")
async def suspend(
    slug: Slug, body: StatusBody, actor: AdminDep, session: SessionDep, state: StateDep
) -> dict[str, Any]:
    """No new orders; its open orders finish and its money stays its own. The reason is shown."""
    merchant = await accounts.set_status(session, slug, status="suspended", reason=body.reason, actor=actor)
    await session.commit()  # before the directory forgets: a re-read must see the new status
    state.shops.forget(slug)
    return accounts.public(merchant)


@router.post("/merchants/{slug}/resume")
async def resume(slug: Slug, actor: AdminDep, session: SessionDep, state: StateDep) -> dict[str, Any]:
    merchant = await accounts.set_status(session, slug, status="active", reason="", actor=actor)
    await session.commit()
    state.shops.forget(slug)
    return accounts.public(merchant)


@router.post("/merchants/{slug}/terms")
async def set_terms(
    slug: Slug, body: TermsBody, actor: AdminDep, session: SessionDep, state: StateDep
) -> dict[str, Any]:
    """A new fee and hold, for later sales only: a sale already made keeps its split and release time."""
    merchant = await accounts.set_terms(
        session, slug, fee_bps=body.fee_bps, hold_seconds=body.hold_seconds, actor=actor
    )
    await session.commit()
    state.shops.forget(slug)
    return accounts.public(merchant)


@router.get("/key-flags")
async def key_flags(_: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Keys one shop imported that another already holds: a possible double sale, to look into."""
    return {"flags": await accounts.key_flags(session)}
