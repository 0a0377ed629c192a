"""Reading a key upload exactly: only the media types we can parse, within a size limit enforced while reading.

Accepted: text/plain (one key a line), text/csv or application/csv (with a header), and
multipart/form-data holding exactly one file part (`curl -F file=@keys.txt`, a browser form,
/docs). Anything else is refused with 415 before a byte of the body is read, so a form-encoded
body (`curl -d @keys.txt`) can never glue lines together and a multipart envelope can never be
stored as keys.
"""

from collections.abc import AsyncGenerator

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from miaofa.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

MAX_UPLOAD_BYTES = 64 * 1024 * 1024
TEXT_TYPES = ("text/plain",)
CSV_TYPES = ("text/csv", "application/csv")
MULTIPART = "multipart/form-data"
ACCEPTED = "text/plain, text/csv (or application/csv), or multipart/form-data with one file part"
UTF8_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")


def _media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    media, *params = (content_type or "").split(";")
    options = {}
    for param in params:
        name, _, value = param.partition("=")
        options[name.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), options


def check_media_type(content_type: str | None) -> str:
    """The media type of an acceptable upload, or UnsupportedMediaType (nothing has been read yet)."""
    media, options = _media_type(content_type)
    if media not in TEXT_TYPES + CSV_TYPES + (MULTIPART,):
        sent = f"got {media}" if media else "no Content-Type was sent"
        raise UnsupportedMediaType(f"send the keys as {ACCEPTED}; {sent}")
    charset = options.get("charset", "utf-8").lower()
    if media != MULTIPART and charset not in UTF8_CHARSETS:
        raise UnsupportedMediaType(f"send the keys as UTF-8 text; got charset={charset}")
    return media


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB; split it", error="upload_too_large"
    )


async def _limited(request: Request) -> AsyncGenerator[bytes, None]:
    """The body, chunk by chunk, stopping with 413 as soon as it passes the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise _too_large()  # known before reading anything
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > MAX_UPLOAD_BYTES:
            raise _too_large()
        yield chunk


async def read_upload(request: Request) -> tuple[bytes, str]:
    """The uploaded file's bytes and the media type to parse them as (text/plain or text/csv)."""
    media = check_media_type(request.headers.get("content-type"))
    if media != MULTIPART:
        body = bytearray()
        async for chunk in _limited(request):
            body += chunk
        return bytes(body), media
    return await _read_file_part(request)


async def _read_file_part(request: Request) -> tuple[bytes, str]:
    stream = _limited(request)
    try:
        # A file part is spooled to disk past 1 MiB; other fields are capped at 64 KiB each.
        form = await MultiPartParser(
            request.headers, stream, max_files=16, max_fields=64, max_part_size=64 * 1024
        ).parse()
    except MultiPartException as exc:
        raise InvalidInput(f"the multipart body cannot be parsed: {exc.message}", error="malformed_multipart") from None
    finally:
        await stream.aclose()
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if len(files) != 1:
            raise InvalidInput(
                f"send exactly one complete file part (curl -F file=@keys.txt); got {len(files)}",
                error="malformed_multipart",
            )
        upload = files[0]
        data = await upload.read()
        part_media, _ = _media_type(upload.content_type)
        is_csv = part_media in CSV_TYPES or (upload.filename or "").lower().endswith(".csv")
        return data, "text/csv" if is_csv else "text/plain"
    finally:
        await form.close()
