"""What the buyer's API reads and answers: the order body, the checks every text passes at the edge,
and the answers to POST /orders (201 opened, 202 held for review, 200 an Idempotency-Key replay)."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Path
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError, core_schema

from miaofa.errors import InvalidInput
from miaofa.text import EMAIL_PATTERN, control_character, email_problem, plain_pattern

MAX_QUANTITY = 10


def _no_control(value: Any) -> Any:
    if isinstance(value, str) and control_character(value):
        raise PydanticCustomError("control_character", "must not contain control characters")
    return value


def one_address(value: str) -> str:
    if problem := email_problem(value):
        raise PydanticCustomError("email", problem)
    return value


def with_pattern(json_schema: dict[str, Any], pattern: str) -> None:
    """`pattern` on the schema's string (each string branch of an `anyOf`), unless one is already set."""
    for branch in [json_schema, *json_schema.get("anyOf", [])]:
        if branch.get("type") == "string":
            branch.setdefault("pattern", pattern)


class _Plain:
    """No control or format characters (miaofa/text.py): refused at the edge, stated in the schema."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(_no_control, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        json_schema = handler(schema)
        with_pattern(json_schema, plain_pattern())
        return json_schema


Plain = _Plain()
EmailAddress = Annotated[
    str, Plain, Field(max_length=254, json_schema_extra={"pattern": EMAIL_PATTERN}), AfterValidator(one_address)
]


class OrderCreate(BaseModel):
    sku: Annotated[str, Plain, Field(min_length=1, max_length=64)]
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY)
    email: EmailAddress = Field(description="one address (name@domain); no display name, no list")
    gateway: Annotated[str, Plain, Field(max_length=32)] = "simulator"
    coupon_code: Annotated[str | None, Plain] = Field(default=None, min_length=1, max_length=40)
    lang: Literal["zh", "en"] | None = Field(
        default=None, description="language of the buyer's emails; else from Accept-Language, else both"
    )
    merchant: str | None = Field(
        default=None,
        min_length=2,
        max_length=32,
        pattern=r"^[a-z0-9][a-z0-9-]{1,31}$",
        description="the shop's slug; absent: the default shop",
    )


def plain(name: str, value: str) -> str:
    """A header or path parameter, checked like the body's text fields."""
    if control_character(value):
        raise InvalidInput(f"{name}: must not contain control characters")
    return value


def _order_id(
    order_id: Annotated[str, Path(min_length=1, max_length=64, json_schema_extra={"pattern": plain_pattern()})],
) -> str:
    return plain("order_id", order_id)


OrderId = Annotated[str, Depends(_order_id)]

# Answered as datetime.isoformat() ("+00:00"), as the API always has; pydantic's own JSON says "Z".
IsoTime = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class PaymentOut(BaseModel):
    gateway: str
    payment_id: str
    pay_url: str


class OrderOpened(BaseModel):
    """201: stock reserved and the payment created (none when a coupon made the order free)."""

    order_id: str
    access_token: str = Field(description="proof of being the buyer: send it as X-Order-Token")
    status: str
    amount_cents: int
    currency: str
    expires_at: IsoTime = Field(description="when the payment window ends")
    payment: PaymentOut | None


class OrderInReview(BaseModel):
    """202: the order is held for a review by support (no payment yet); its stock is reserved."""

    order_id: str
    access_token: str
    status: Literal["in_review"]
    amount_cents: int
    currency: str
    expires_at: IsoTime = Field(description="when the review ends: an order not approved by then is rejected")
    payment: None = Field(default=None, description="none until support approves the order")


class OrderReplayed(BaseModel):
    """200: an Idempotency-Key replay, the order as it is now; never its access token."""

    order_id: str
    access_token: None = None
    replayed: Literal[True] = True
    status: str
    amount_cents: int
    currency: str
    expires_at: IsoTime
    payment: PaymentOut | None
