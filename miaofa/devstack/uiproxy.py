"""The dev Temporal UI, read-only: a small reverse proxy in front of the dev server's embedded UI.

`temporal server start-dev` (CLI 1.9) has no flag for the UI's `disableWriteActions`, and its UI
has no login: a DNS-rebinding page (`evil.example` resolved to 127.0.0.1) could read it and write
through it (issue 17, N5). So `miaofa up` serves the UI's port itself, with this proxy:

- the Host header must be `127.0.0.1:<port>` or `localhost:<port>`: a rebinding page sends its
  own name and gets 403, before anything reaches the UI;
- only GET and HEAD go through (reading workflows, histories, the settings); every other method
  (signal, update, terminate, reset, start, batch …) gets 403, unless MIAOFA_TEMPORAL_UI_WRITES;
- the UI's settings are rewritten so the UI hides its write buttons, and sends the codec cookie
  with its codec calls (api/routes/codec.py).

The embedded UI and the dev server's HTTP API listen on ports from the Fetch standard's list of
ports every browser refuses to connect to ("bad ports"), so a web page cannot reach them around
this proxy. A local user still can, as they can reach Temporal's gRPC port: that is why the worker
refuses any Update not sent through the codec (miaofa/crypto/codec.py).
"""

import argparse
import json
import random

import httpx
import uvicorn
from starlette.types import Receive, Scope, Send

from miaofa.devstack import procs

# The unprivileged ports of https://fetch.spec.whatwg.org/#bad-port: no browser connects to them.
BROWSER_BLOCKED_PORTS = (6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080, 4190, 3659, 4045, 6566, 1719, 1720, 1723)
READS = frozenset({"GET", "HEAD"})
MAX_BODY_BYTES = 1024 * 1024  # what the UI posts with writes on: a signal's or an update's input
SETTINGS_PATH = "/api/v1/settings"
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"}
)


def hidden_ports(count: int) -> list[int]:
    """Free ports browsers will not connect to (a random free port if none is), picked at random so two
    shops starting at once rarely pick the same."""
    candidates = random.sample(BROWSER_BLOCKED_PORTS, len(BROWSER_BLOCKED_PORTS))
    free = [port for port in candidates if not procs.port_open("127.0.0.1", port)][:count]
    return free + [procs.free_port() for _ in range(count - len(free))]


def read_only_settings(body: bytes, writes: bool) -> bytes:
    settings = json.loads(body)
    settings["DisableWriteActions"] = not writes
    settings.setdefault("Codec", {})["IncludeCredentials"] = True  # the codec cookie (api/routes/codec.py)
    return json.dumps(settings).encode()


class UiProxy:
    """A pure ASGI app: checks, then forwards to the embedded UI and streams its answer back."""

    def __init__(self, port: int, upstream: str, writes: bool = False) -> None:
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.upstream = upstream.rstrip("/")
        self.writes = writes
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5), follow_redirects=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        if headers.get("host", "").lower() not in self.hosts:
            await _answer(send, 403, b"this UI answers only as 127.0.0.1 or localhost\n")
            return
        if scope["method"] not in READS and not self.writes:
            await _answer(send, 403, b"the Temporal UI is read-only here (MIAOFA_TEMPORAL_UI_WRITES=true to change)\n")
            return
        await self._forward(scope, receive, send, headers)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        path = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"{self.upstream}{path}" + (f"?{query}" if query else "")
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await _answer(send, 413, b"request body too large\n")
                return
            if not message.get("more_body"):
                break
        settings = scope["method"] == "GET" and scope["path"] == SETTINGS_PATH
        sent = {name: value for name, value in headers.items() if name not in _HOP_BY_HOP}
        if settings:
            sent["accept-encoding"] = "identity"  # rewritten below: plain JSON
        try:
            request = self.client.build_request(scope["method"], url, headers=sent, content=body or None)
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError:
            await _answer(send, 502, b"the Temporal UI is not answering\n")
            return
        try:
            kept = [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in response.headers.multi_items()
                if name.lower() not in _HOP_BY_HOP and not (settings and name.lower() == "content-length")
            ]
            if settings and response.status_code == 200:
                content = read_only_settings(await response.aread(), self.writes)
                kept.append((b"content-length", str(len(content)).encode()))
                await send({"type": "http.response.start", "status": 200, "headers": kept})
                await send({"type": "http.response.body", "body": content})
                return
            await send({"type": "http.response.start", "status": response.status_code, "headers": kept})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(send: Send, status: int, text: bytes) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})


def main() -> None:
    parser = argparse.ArgumentParser(description="The dev Temporal UI behind a read-only, loopback-only proxy.")
    parser.add_argument("--port", type=int, required=True, help="where browsers open the UI")
    parser.add_argument("--upstream", required=True, help="the embedded UI, e.g. http://127.0.0.1:6666")
    parser.add_argument("--writes", action="store_true", help="let the UI's write actions through")
    args = parser.parse_args()
    app = UiProxy(args.port, args.upstream, args.writes)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", server_header=False, proxy_headers=False)


if __name__ == "__main__":
    main()
