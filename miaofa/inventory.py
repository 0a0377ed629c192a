"""Card-key inventory: import with global dedupe, stock counts, and the reservation lifecycle.

available → reserved (held for one order) → sold → refunded; a released reservation goes back to
available. Every transition is one conditional UPDATE, so concurrent callers can never take the
same key twice.
"""

import csv
import functools
import io
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from miaofa.crypto.vault import Vault
from miaofa.db.engine import rowcount
from miaofa.db.models import CardKey
from miaofa.errors import InvalidInput, UnsupportedMediaType
from miaofa.text import control_class, space_class

MAX_KEY_LENGTH = 512
IMPORT_BATCH = 10_000
CSV_KEY_COLUMNS = ("key", "code", "card_key", "secret", "卡密")
LINE_TYPES = ("text/plain",)
CSV_TYPES = ("text/csv", "application/csv")
_LINE_END = re.compile(r"\r\n|\r|\n")
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


@dataclass
class ImportResult:
    imported: int
    duplicates: int


@dataclass
class Stock:
    available: int
    reserved: int
    sold: int
    refunded: int = 0


def _key_pattern(also_barred: str = "", longest: int | None = MAX_KEY_LENGTH) -> str:
    """One key as `parse_keys` takes it: no control character, and starts and ends with something
    that is not a space (the spaces around it are stripped)."""
    edge = f"[^{control_class()}{space_class()}{also_barred}]"
    inner = f"[^{control_class()}{also_barred}]" + ("*" if longest is None else f"{{0,{longest - 2}}}")
    return f"{edge}(?:{inner}{edge})?"


@functools.cache
def keys_text_pattern() -> str:
    """A text/plain upload `parse_keys` takes, as the OpenAPI schema states it: keys one a line (CR,
    LF or CRLF), spaces around them and blank lines ignored, at least one key."""
    space, along = space_class(), space_class(but="\r\n")
    key = _key_pattern()
    return f"^[{space}]*{key}(?:[{along}]*[\\r\\n][{space}]*{key})*[{space}]*$"


@functools.cache
def keys_csv_pattern() -> str:
    """The simplest CSV upload, as the schema states it: one column (any header name), no quotes or
    commas, at least one key. `parse_keys` takes more (a named column among others, quoting)."""
    space, along = space_class(), space_class(but="\r\n")
    header, key = _key_pattern(',"', None), _key_pattern(',"')
    return f"^[{space}]*{header}[{along}]*(?:[\\r\\n][{space}]*{key}[{along}]*)+[{space}]*$"


def parse_keys(data: bytes, content_type: str) -> list[str]:
    """Keys from text/plain (one a line) or CSV with a header. Raises InvalidInput; never echoes a key.

    Only CR, LF and CRLF end a line; whitespace around a key is dropped. A key holding any other
    control or format character (Unicode Cc, Cf, Zl, Zp: NUL, tab, vertical tab, NEL, zero-width
    space, bidi marks, …) refuses the whole upload, naming the line and the code point.
    """
    media = content_type.split(";")[0].strip().lower()
    if media not in LINE_TYPES + CSV_TYPES:
        raise UnsupportedMediaType(f"keys are parsed from text/plain or text/csv, not {media or 'nothing'}")
    try:
        body = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput("the upload is not UTF-8 text", error="invalid_upload") from exc
    keys = _parse_csv(body) if media in CSV_TYPES else _parse_lines(body)
    if not keys:
        raise InvalidInput("the upload holds no keys", error="empty_upload")
    return keys


def _parse_lines(body: str) -> list[str]:
    keys = []
    for number, line in enumerate(_LINE_END.split(body), start=1):
        key = line.strip()
        if key:
            _check_key(key, number)
            keys.append(key)
    return keys


def _parse_csv(body: str) -> list[str]:
    records: list[tuple[int, list[str]]] = []
    try:
        reader = csv.reader(io.StringIO(body, newline=""), strict=True)
        line = 0
        for row in reader:
            if any(cell.strip() for cell in row):
                records.append((line + 1, row))  # the line the record starts on
            line = reader.line_num
    except csv.Error as exc:
        raise InvalidInput(f"the CSV cannot be parsed: {exc}", error="malformed_csv") from None
    if not records:
        return []
    header = [cell.strip().lower() for cell in records[0][1]]
    column = next((header.index(name) for name in CSV_KEY_COLUMNS if name in header), None)
    if column is None:
        if len(header) != 1:
            raise InvalidInput(
                f"the CSV header needs a column named one of {', '.join(CSV_KEY_COLUMNS)}", error="malformed_csv"
            )
        column = 0
    keys = []
    for number, row in records[1:]:
        if len(row) != len(header):
            raise InvalidInput(
                f"CSV line {number} has {len(row)} fields, the header has {len(header)}", error="malformed_csv"
            )
        key = row[column].strip()
        if key:
            _check_key(key, number)
            keys.append(key)
    return keys


def _check_key(key: str, line: int) -> None:
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"the key on line {line} is longer than {MAX_KEY_LENGTH} characters", error="key_too_long")
    if key.isprintable():  # the fast path: no Cc, Cf, Zl or Zp (nor other non-printables)
        return
    bad = next((char for char in key if unicodedata.category(char) in _CONTROL_CATEGORIES), None)
    if bad is not None:
        raise InvalidInput(
            f"the key on line {line} contains the control character U+{ord(bad):04X}; "
            "keys may not contain control characters",
            error="control_character",
        )


async def import_keys(
    session: AsyncSession,
    vault: Vault,
    product_id: int,
    keys: list[str],
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Insert new keys; a key the merchant already holds (any of its products) or repeated in the file is a
    duplicate. A key another merchant holds is imported all the same (saying so would let one shop test
    another's keys) and flagged to the platform admin as a possible double sale (key_flags).

    Rows are COPYed into a temporary table and moved with one INSERT … ON CONFLICT DO NOTHING per
    batch: about ten times faster than multi-row INSERTs, and still one transaction.
    """
    unique: dict[bytes, str] = {}
    for key in keys:
        unique.setdefault(vault.key_hash(key), key)
    items = list(unique.items())
    connection = await (await session.connection()).get_raw_connection()
    pg = connection.driver_connection  # asyncpg, for COPY
    assert pg is not None  # an open connection has its driver's
    merchant_id = await pg.fetchval("SELECT merchant_id FROM products WHERE id = $1", product_id)
    await pg.execute("CREATE TEMP TABLE IF NOT EXISTS key_import (ciphertext bytea, key_hash bytea) ON COMMIT DROP")
    imported = 0
    for start in range(0, len(items), IMPORT_BATCH):
        batch = items[start : start + IMPORT_BATCH]
        await pg.copy_records_to_table(
            "key_import",
            columns=["ciphertext", "key_hash"],
            records=[(vault.encrypt(key), digest) for digest, key in batch],
        )
        status = await pg.execute(
            "INSERT INTO card_keys (merchant_id, product_id, ciphertext, key_hash, status) "
            "SELECT $2::varchar, $1::int, ciphertext, key_hash, 'available' FROM key_import "
            "ON CONFLICT (merchant_id, key_hash) DO NOTHING",
            product_id,
            merchant_id,
        )
        await pg.execute(
            "INSERT INTO key_flags (key_hash, merchant_id, product_id, held_by) "
            "SELECT DISTINCT i.key_hash, $2::varchar, $1::int, k.merchant_id FROM key_import i "
            "JOIN card_keys k ON k.key_hash = i.key_hash AND k.merchant_id <> $2 "
            "ON CONFLICT DO NOTHING",
            product_id,
            merchant_id,
        )
        await pg.execute("TRUNCATE key_import")
        imported += int(status.rsplit(" ", 1)[1])  # "INSERT 0 <rows>"
        if on_progress:
            on_progress(min(start + IMPORT_BATCH, len(items)), len(items))
    return ImportResult(imported=imported, duplicates=len(keys) - imported)


async def stock(session: AsyncSession, product_id: int) -> Stock:
    rows = await session.execute(
        select(CardKey.status, func.count()).where(CardKey.product_id == product_id).group_by(CardKey.status)
    )
    counts = {status: count for status, count in rows.all()}
    return Stock(
        available=counts.get("available", 0),
        reserved=counts.get("reserved", 0),
        sold=counts.get("sold", 0),
        refunded=counts.get("refunded", 0),
    )


async def unsold_up_to(session: AsyncSession, product_id: int, limit: int) -> int:
    """The product's keys not sold yet (available or reserved), counted up to `limit`: enough to compare
    with a share of the stock on the order path without counting a large stock."""
    unsold = (
        select(CardKey.id)
        .where(CardKey.product_id == product_id, CardKey.status.in_(("available", "reserved")))
        .limit(limit)
        .subquery()
    )
    return await session.scalar(select(func.count()).select_from(unsold)) or 0


async def reserved_by_product(session: AsyncSession) -> dict[int, int]:
    """Keys held by orders not paid yet (awaiting payment or in review), per product."""
    rows = await session.execute(
        select(CardKey.product_id, func.count()).where(CardKey.status == "reserved").group_by(CardKey.product_id)
    )
    return {key: count for key, count in rows.all()}


async def available_by_product(session: AsyncSession) -> dict[int, int]:
    rows = await session.execute(
        select(CardKey.product_id, func.count()).where(CardKey.status == "available").group_by(CardKey.product_id)
    )
    return {key: count for key, count in rows.all()}


async def orders_holding_keys(session: AsyncSession, order_ids: list[str]) -> set[str]:
    rows = await session.scalars(select(CardKey.order_id).where(CardKey.order_id.in_(order_ids)).distinct())
    return {order_id for order_id in rows if order_id is not None}  # the IN already left NULL out


RESERVE_SQL = text("""
    WITH picked AS (
        SELECT id FROM card_keys
        WHERE product_id = :product_id AND status = 'available'
        LIMIT :quantity
        FOR UPDATE SKIP LOCKED
    )
    UPDATE card_keys AS k SET status = 'reserved', order_id = :order_id, reserved_at = :at
    FROM picked WHERE k.id = picked.id
    RETURNING k.id
""")


async def reserve(
    session: AsyncSession, *, product_id: int, order_id: str, quantity: int, at: datetime, new_order: bool = False
) -> list[int]:
    """Reserve keys for the order; returns fewer ids than asked when stock is short (caller rolls back).
    new_order: inserted in this transaction, so it cannot hold keys yet (no look first)."""
    held = [] if new_order else await reserved_or_sold_ids(session, order_id)
    if held:  # a retried step: the order already holds its keys
        return held
    rows = await session.execute(
        RESERVE_SQL, {"product_id": product_id, "order_id": order_id, "quantity": quantity, "at": at}
    )
    return [row[0] for row in rows]


async def reserved_or_sold_ids(session: AsyncSession, order_id: str) -> list[int]:
    rows = await session.scalars(
        select(CardKey.id)
        .where(CardKey.order_id == order_id, CardKey.status.in_(("reserved", "sold")))
        .order_by(CardKey.id)
    )
    return list(rows)


async def release(session: AsyncSession, order_id: str) -> int:
    result = await session.execute(
        update(CardKey)
        .where(CardKey.order_id == order_id, CardKey.status == "reserved")
        .values(status="available", order_id=None, reserved_at=None)
    )
    return rowcount(result)


async def commit_sold(session: AsyncSession, order_id: str, at: datetime) -> list[int]:
    """Reserved → sold, exactly once: a repeat finds nothing reserved and returns the same ids."""
    await session.execute(
        update(CardKey)
        .where(CardKey.order_id == order_id, CardKey.status == "reserved")
        .values(status="sold", sold_at=at)
    )
    rows = await session.scalars(
        select(CardKey.id).where(CardKey.order_id == order_id, CardKey.status == "sold").order_by(CardKey.id)
    )
    return list(rows)


async def mark_refunded(session: AsyncSession, order_id: str) -> int:
    result = await session.execute(
        update(CardKey).where(CardKey.order_id == order_id, CardKey.status == "sold").values(status="refunded")
    )
    return rowcount(result)


async def delivered_keys(session: AsyncSession, vault: Vault, order_id: str) -> list[str]:
    """Decrypt the order's sold keys, at read time only."""
    rows = await session.scalars(
        select(CardKey.ciphertext).where(CardKey.order_id == order_id, CardKey.status == "sold").order_by(CardKey.id)
    )
    return [vault.decrypt(blob) for blob in rows]


def mask(key: str) -> str:
    """Enough of a key for support to tell keys apart on a call, never enough to use it."""
    return "•" * 8 + key[-4:] if len(key) > 8 else "•" * 8


async def handed_out_keys(session: AsyncSession, vault: Vault, order_id: str) -> list[dict[str, str | int]]:
    """The keys an order was given (sold, or refunded since), decrypted: for an audited reveal to staff."""
    rows = await session.execute(
        select(CardKey.id, CardKey.status, CardKey.ciphertext)
        .where(CardKey.order_id == order_id, CardKey.status.in_(("sold", "refunded")))
        .order_by(CardKey.id)
    )
    return [{"key_id": key_id, "status": status, "key": vault.decrypt(blob)} for key_id, status, blob in rows]


async def masked_keys(session: AsyncSession, vault: Vault, order_id: str) -> list[dict[str, str | int]]:
    rows = await session.execute(
        select(CardKey.id, CardKey.status, CardKey.ciphertext).where(CardKey.order_id == order_id).order_by(CardKey.id)
    )
    return [{"key_id": key_id, "status": status, "masked": mask(vault.decrypt(blob))} for key_id, status, blob in rows]
