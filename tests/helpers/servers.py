"""Serve an ASGI app on a loopback port inside the test's event loop."""

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn

from tests.helpers.waiting import eventually


def bind() -> socket.socket:
    # Bind first and hand the socket to uvicorn: no window for another process to take the port.
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY only then, else each request waits
    # ~40 ms on Nagle plus delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serve(app, sock: socket.socket) -> AsyncIterator[str]:
    port = sock.getsockname()[1]
    # proxy_headers=False, as `miaofa api` runs: X-Forwarded-For is read by the app, from trusted proxies only.
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", proxy_headers=False)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))

    def started() -> bool:
        if task.done():
            task.result()  # re-raise the startup failure
        return server.started

    try:
        await eventually(started, timeout=30, interval=0.01, message=f"the server on port {port} to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()
