"""One gateway adapter's HTTP client: made on first use, closed with the adapter, failures named safely."""

from typing import Any

import httpx

from miaofa.gateways.base import GatewayError


class GatewayHttp:
    """A client of our own is made on first use (an adapter that only verifies notifies never needs one);
    a given one is shared and left open. A transport failure becomes a GatewayError naming the operation
    and the exception's class only, with no chained exception: messages and tracebacks carry URLs, and
    some gateways (epay) put the merchant key in them."""

    def __init__(self, gateway: str, client: httpx.AsyncClient | None, timeout: float) -> None:
        self._gateway = gateway
        self._client = client
        self._owns_client = client is None
        self._timeout = timeout

    async def request(self, op: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        try:
            return await self._client.request(method, url, timeout=self._timeout, **kwargs)
        except httpx.TimeoutException:
            raise GatewayError(f"{self._gateway} {op}: timeout") from None
        except httpx.HTTPError as exc:
            raise GatewayError(f"{self._gateway} {op}: transport error ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
