"""A shop's own coupons: the owner gives them out (a percentage or an amount off, for a time); staff
and owner list them. A code is the shop's: another shop may use the same letters for its own."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Self

from fastapi import APIRouter
from pydantic import BaseModel, Field, StrictInt, model_validator

from api.deps import MerchantDep, OwnerDep, SessionDep
from miaofa import audit, coupons
from miaofa.db.models import Coupon

router = APIRouter(prefix="/merchant/coupons", tags=["merchant"])

Code = Annotated[str, Field(min_length=4, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{3,39}$")]
Currency = Annotated[str, Field(min_length=3, max_length=8, pattern=r"^[A-Za-z]{3,8}$")]


class CouponCreate(BaseModel):
    code: Code | None = Field(default=None, description="letters, digits and '-'; made for you when left out")
    percent_off: StrictInt | None = Field(default=None, ge=1, le=100)
    amount_off_cents: StrictInt | None = Field(default=None, ge=1, le=10**12)
    currency: Currency | None = Field(default=None, description="required with amount_off_cents")
    valid_days: StrictInt = Field(default=30, ge=1, le=coupons.MAX_VALID_FOR.days)

    @model_validator(mode="after")
    def one_discount(self) -> Self:
        if (self.percent_off is None) == (self.amount_off_cents is None):
            raise ValueError("give exactly one of percent_off and amount_off_cents")
        if (self.amount_off_cents is None) != (self.currency is None):
            raise ValueError("currency goes with amount_off_cents, and only with it")
        return self


def view(coupon: Coupon) -> dict[str, Any]:
    return {
        "code": coupon.code,
        "percent_off": coupon.percent_off,
        "amount_off_cents": coupon.amount_off_cents,
        "currency": coupon.currency,
        "expires_at": coupon.expires_at.isoformat(),
        "reason": coupon.reason,
        "issued_for_order_id": coupon.issued_for_order_id,
        "used_by_order_id": coupon.used_by_order_id,
        "used_at": coupon.used_at.isoformat() if coupon.used_at else None,
    }


@router.get("")
async def list_coupons(holder: MerchantDep, session: SessionDep) -> dict[str, Any]:
    """The shop's coupons, newest first: its own and the late-delivery ones the platform gave its buyers."""
    return {"coupons": [view(row) for row in await coupons.listing(session, holder.merchant_id)]}


@router.post("", status_code=201)
async def create_coupon(body: CouponCreate, holder: OwnerDep, session: SessionDep) -> dict[str, Any]:
    """One coupon, spent by one delivered order. A code the shop already has is a 409 and changes nothing."""
    coupon = await coupons.create_for_shop(
        session,
        holder.merchant_id,
        code=body.code.upper() if body.code else None,
        percent_off=body.percent_off,
        amount_off_cents=body.amount_off_cents,
        currency=body.currency.upper() if body.currency else None,
        expires_at=datetime.now(UTC) + timedelta(days=body.valid_days),
    )
    audit.record(session, holder.actor, "coupon.create", coupon.code, merchant_id=holder.merchant_id)
    return view(coupon)
