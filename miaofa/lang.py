"""The buyer's language: one reading of Accept-Language for the pages and the emails alike."""

LANGS = ("zh", "en")  # the languages the shop speaks


def _weight(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return min(1.0, max(0.0, float(value.strip())))
            except ValueError:
                return 0.0  # a malformed weight counts as "not acceptable"
    return 1.0


def preferred(accept_language: str | None) -> str | None:
    """The language the buyer ranks highest among the shop's (`zh` for any zh-*, `en` for any en-*),
    by q-value, ties in the order given; None when they name neither (q=0 names nothing, `*` no one).

    `fr, zh;q=0.5` is Chinese: the buyer reads French first, Chinese second, and we have no French."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")[:50]):  # a header is client input
        tag, _, params = part.partition(";")
        primary = tag.strip().lower().split("-")[0]
        weight = _weight(params)
        if primary in LANGS and weight > 0:
            ranked.append((-weight, index, primary))
    return min(ranked)[2] if ranked else None


def pick(explicit: str | None, accept_language: str | None) -> str | None:
    """An explicit choice (`zh`/`en`) wins; else Accept-Language; None: no preference."""
    return explicit if explicit in LANGS else preferred(accept_language)
