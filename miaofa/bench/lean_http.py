"""A small HTTP/1.1 client for the load itself: the measuring client must not be the bottleneck."""

import asyncio
import json
import time
from typing import Any

import httpx


class LeanHTTP:
    """A small HTTP/1.1 client for the load paths (POST /orders, paying at the simulator).

    httpx's connection pool does work proportional to the requests in flight on every event: with
    2,000 requests at once it spent over a minute of CPU before the first answer, even against a
    server that answers at once, and so measured itself. This one keeps idle keep-alive
    connections in a list and opens a new connection whenever none is idle: 2,000 requests cost
    well under a second of client CPU. Answers with Content-Length or chunked bodies; nothing more.
    """

    REUSE_IDLE_SECONDS = 2.0  # below uvicorn's 5 s keep-alive: a reused connection is still open

    def __init__(self, base_url: str) -> None:
        url = httpx.URL(base_url)
        self.host, self.port = url.host, url.port or 80
        self.host_header = f"{url.host}:{self.port}"
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now - since < self.REUSE_IDLE_SECONDS and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    async def request(
        self, method: str, path: str, json_body: Any = None, headers: dict[str, str] | None = None, timeout: float = 120
    ) -> tuple[int, bytes]:
        body = b"" if json_body is None else json.dumps(json_body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host_header}\r\nContent-Length: {len(body)}\r\n"
        if json_body is not None:
            head += "Content-Type: application/json\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        message = (head + "\r\n").encode() + body
        async with asyncio.timeout(timeout):
            conn = self._take()
            if conn is not None:
                try:
                    return await self._exchange(conn, message)
                except (ConnectionError, asyncio.IncompleteReadError):
                    pass  # the server closed it meanwhile: once more on a new connection
            conn = await asyncio.open_connection(self.host, self.port)
            return await self._exchange(conn, message)

    async def _exchange(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], message: bytes
    ) -> tuple[int, bytes]:
        reader, writer = conn
        try:
            writer.write(message)
            await writer.drain()
            lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    fields[name.strip().lower()] = value.strip().lower()
            keep = fields.get("connection") != "close"
            if "content-length" in fields:
                data = await reader.readexactly(int(fields["content-length"]))
            elif fields.get("transfer-encoding") == "chunked":
                chunks = []
                while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    chunks.append(await reader.readexactly(size))
                    await reader.readexactly(2)
                await reader.readuntil(b"\r\n")
                data = b"".join(chunks)
            else:
                data, keep = await reader.read(), False
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return status, data

    async def aclose(self) -> None:
        while self.idle:
            self.idle.pop()[1].close()


LEAN_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError)
