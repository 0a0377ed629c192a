"""The buyer's HTML forms (issue 17): every state-changing form refuses a cross-site post and a post
without this browser's CSRF token (N3), and the order lookup works without JavaScript (N13)."""

import re
import uuid

import httpx
from sqlalchemy import func, select

from api.csrf import Csrf, origin_of
from miaofa.db.models import OutboxMessage
from miaofa.risk.limiters import LookupRate
from tests.helpers.stack import Stack

EN = {"Accept-Language": "en-US,en;q=0.9"}
BROWSER = {**EN, "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
HOSTILE = {**BROWSER, "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
EXPIRED = "This form has expired or was sent from another site. Please submit it again."


def _buyer() -> str:
    return f"buyer-{uuid.uuid4().hex[:10]}@example.com"


def _csrf(page: str) -> str:
    found = re.search(r'<input type="hidden" name="csrf" value="([A-Za-z0-9_-]+)">', page)
    assert found, page[:300]
    return found.group(1)


def _browser(stack: Stack) -> httpx.AsyncClient:
    """A browser of its own: its cookies (the CSRF nonce) are not the shared client's."""
    return httpx.AsyncClient(base_url=stack.http.base_url, timeout=10)


async def _listed(stack: Stack, keys: int) -> str:
    sku = await stack.product(keys)
    await stack.refresh_stock()
    return sku


async def _lookups(stack: Stack, email: str) -> int:
    async with stack.sessionmaker() as session:
        return await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.topic == "email.lookup", OutboxMessage.buyer_hash == stack.vault.buyer_hash(email))
        )


# ---- N3: CSRF ------------------------------------------------------------------------------------


async def test_a_cross_site_form_post_to_buy_is_refused_and_reserves_nothing(dev_stack: Stack) -> None:
    sku = await _listed(dev_stack, 12)
    attack = {"sku": sku, "email": _buyer(), "quantity": "10", "gateway": "simulator", "idem": uuid.uuid4().hex}
    async with _browser(dev_stack) as victim:
        # A hostile page's form: the browser says where it comes from, and has no token of ours.
        hostile = await victim.post("/buy", data=attack, headers=HOSTILE, follow_redirects=False)
        assert hostile.status_code == 403
        assert f'<p class="error" role="alert" data-error>{EXPIRED}</p>' in hostile.text
        assert hostile.headers["cache-control"] == "no-store"
        # The other site's values are not put in the buyer's form, one click from being sent.
        assert attack["email"] not in hostile.text and 'inputmode="numeric" value="1"' in hostile.text

        token = _csrf((await victim.get("/", params={"q": sku})).text)
        # Even a browser that holds a good token (its cookie and the form's) is refused from another site.
        for headers in (
            HOSTILE,
            {**BROWSER, "Sec-Fetch-Site": "same-site"},  # a sibling subdomain is another site
            {**BROWSER, "Origin": "https://evil.example"},  # an old browser: Origin only
            {**BROWSER, "Origin": "null", "Sec-Fetch-Site": "cross-site"},  # a no-referrer hostile page
        ):
            refused = await victim.post("/buy", data={**attack, "csrf": token}, headers=headers)
            assert refused.status_code == 403, headers
        # From the shop itself, the token is needed: none, another form's, or another browser's.
        lookup_token = _csrf((await victim.get("/lookup")).text)
        async with _browser(dev_stack) as other:
            others = _csrf((await other.get("/")).text)
        same = {**BROWSER, "Origin": str(dev_stack.http.base_url).rstrip("/"), "Sec-Fetch-Site": "same-origin"}
        for csrf in ("", lookup_token, others, token[:-1] + ("A" if token[-1] != "A" else "B")):
            refused = await victim.post("/buy", data={**attack, "csrf": csrf}, headers=same)
            assert refused.status_code == 403, csrf
        # A client that is not a browser gets the JSON error.
        api = await victim.post("/buy", data=attack, headers={"Accept": "application/json"})
        assert (api.status_code, api.json()) == (
            403,
            {"error": "csrf_refused", "detail": "this form has expired; reload the page and submit it again"},
        )
        cross = await victim.post("/buy", data=attack, headers={"Sec-Fetch-Site": "cross-site"})
        assert (cross.status_code, cross.json()["error"]) == (403, "csrf_refused")
        assert await dev_stack.stock(sku) == {"available": 12, "reserved": 0, "sold": 0, "refunded": 0}

        # The shop's own form, from the shop: with the browser's headers (Chromium sends Origin: null from
        # our no-referrer pages), or without them (not a browser).
        placed = await victim.post("/buy", data={**attack, "csrf": token}, headers=same, follow_redirects=False)
        assert placed.status_code == 303, placed.text[:300]
        for headers in ({**BROWSER, "Origin": "null", "Sec-Fetch-Site": "same-origin"}, {}):
            one = {**attack, "csrf": token, "quantity": "1", "email": _buyer(), "idem": uuid.uuid4().hex}
            assert (await victim.post("/buy", data=one, headers=headers, follow_redirects=False)).status_code == 303
    assert await dev_stack.stock(sku) == {"available": 0, "reserved": 12, "sold": 0, "refunded": 0}


async def test_the_csrf_cookie_is_httponly_strict_and_kept(dev_stack: Stack) -> None:
    async with _browser(dev_stack) as browser:
        first = await browser.get("/")
        cookie = first.headers["set-cookie"]
        assert re.fullmatch(r"mf_csrf=[A-Za-z0-9_-]{43}; HttpOnly; Max-Age=604800; Path=/; SameSite=strict", cookie), (
            cookie
        )
        assert first.headers["cache-control"] == "no-store"  # a page with a token is this browser's alone
        again = await browser.get("/lookup")
        assert "set-cookie" not in again.headers  # the same nonce for every form of this browser
        assert _csrf(first.text) != _csrf(again.text)  # but a token per form


def test_the_origin_check_knows_the_public_url() -> None:
    assert origin_of("HTTPS://Shop.Example:443/o/1") == "https://shop.example"
    assert origin_of("http://[::1]:8000/") == "http://[::1]:8000"
    forms = Csrf(b"k" * 32, origins=["https://shop.example/"])

    class Request:  # the two headers and the URL the check reads
        def __init__(self, headers: dict[str, str]) -> None:
            self.headers = {"host": "10.0.0.5:8000", **headers}
            self.url = httpx.URL("http://10.0.0.5:8000/buy")

    # Behind a TLS proxy the browser's origin is the public URL, not the address the API sees.
    assert not forms.cross_site(Request({"origin": "https://shop.example"}))  # type: ignore[arg-type]
    assert not forms.cross_site(Request({"origin": "http://10.0.0.5:8000"}))  # type: ignore[arg-type]
    assert forms.cross_site(Request({"origin": "https://shop.example.evil.example"}))  # type: ignore[arg-type]
    assert not forms.cross_site(Request({}))  # type: ignore[arg-type]


async def test_a_cross_site_lookup_post_queues_nothing(dev_stack: Stack) -> None:
    email = _buyer()
    async with _browser(dev_stack) as victim:
        refused = await victim.post("/lookup", data={"email": email}, headers=HOSTILE)
        assert refused.status_code == 403 and EXPIRED in refused.text
        token = _csrf((await victim.get("/lookup")).text)
        refused = await victim.post("/lookup", data={"email": email, "csrf": token}, headers=HOSTILE)
        assert refused.status_code == 403
        buy_token = _csrf((await victim.get("/")).text)
        assert (await victim.post("/lookup", data={"email": email, "csrf": buy_token})).status_code == 403
    assert await _lookups(dev_stack, email) == 0


# ---- N13: the lookup without JavaScript ---------------------------------------------------------------


async def test_the_lookup_form_works_without_javascript(dev_stack: Stack) -> None:
    dev_stack.app.state.miaofa.lookup_rate = LookupRate(dev_stack.settings)  # this test's own count
    email = _buyer()
    async with _browser(dev_stack) as browser:
        page = await browser.get("/lookup", headers=EN)
        assert '<form id="lookup" class="lookup" method="post" action="/lookup" novalidate>' in page.text
        assert "<noscript>" not in page.text
        token = _csrf(page.text)
        # What a browser without JavaScript sends: the form, urlencoded.
        sent = await browser.post("/lookup", data={"email": email, "csrf": token}, headers=BROWSER)
        assert sent.status_code == 200, sent.text[:300]
        assert sent.headers["content-type"] == "text/html; charset=utf-8"
        assert (
            '<p class="ok" role="status" data-sent>If there are orders for this address, we have emailed '
            "links to it.</p>" in sent.text
        )
        assert '<p class="error" role="alert" data-error hidden></p>' in sent.text
        assert await _lookups(dev_stack, email) == 1
        async with dev_stack.sessionmaker() as session:
            detail = await session.scalar(
                select(OutboxMessage.detail).where(OutboxMessage.buyer_hash == dev_stack.vault.buyer_hash(email))
            )
        assert detail == {"lang": "en"}  # the page's language

        bad = await browser.post("/lookup", data={"email": "not an email", "csrf": token}, headers=BROWSER)
        assert bad.status_code == 422
        assert (
            '<p class="error" role="alert" data-error>Please enter one valid email address, like '
            "name@example.com.</p>" in bad.text
        )
        assert 'value="not an email"' in bad.text and "data-sent hidden" in bad.text

        for _ in range(2):  # three an hour for one email (the JSON route's rule)
            ok = await browser.post("/lookup", data={"email": email, "csrf": token}, headers=BROWSER)
            assert ok.status_code == 200
        limited = await browser.post("/lookup", data={"email": email, "csrf": token}, headers=BROWSER)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 3500
        assert "Too many attempts. Please wait" in limited.text
    assert await _lookups(dev_stack, email) == 3
    # The JSON API is as it was.
    dev_stack.app.state.miaofa.lookup_rate = LookupRate(dev_stack.settings)
    api = await dev_stack.http.post("/orders/lookup", json={"email": _buyer()})
    assert (api.status_code, api.json()) == (202, {"status": "sent_if_any"})
    form = await dev_stack.http.post("/orders/lookup", data={"email": _buyer()})
    assert form.status_code == 422  # the JSON route reads JSON only
