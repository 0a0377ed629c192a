"""Percentiles, summaries in milliseconds, and Prometheus histograms read back from a /metrics page."""

from collections.abc import Iterable


def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default); `ordered` sorted, not empty."""
    if len(ordered) == 1:
        return ordered[0]
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Iterable[float]) -> dict[str, float] | None:
    """n, min, p50, p90, p99, max, mean in milliseconds; None for no samples."""
    ordered = sorted(s * 1000 for s in seconds)
    if not ordered:
        return None
    return {
        "n": len(ordered),
        "min": round(ordered[0], 2),
        "p50": round(percentile(ordered, 0.5), 2),
        "p90": round(percentile(ordered, 0.9), 2),
        "p99": round(percentile(ordered, 0.99), 2),
        "max": round(ordered[-1], 2),
        "mean": round(sum(ordered) / len(ordered), 2),
    }


def fmt_ms(value: float) -> str:
    return f"{value / 1000:.2f} s" if value >= 10_000 else f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def fmt_summary(stats: dict[str, float] | None, keys: tuple[str, ...] = ("p50", "p99")) -> str:
    if not stats:
        return "no samples"
    return " · ".join(f"{k} {fmt_ms(stats[k])}" for k in keys) + f" (n={stats['n']}, max {fmt_ms(stats['max'])})"


def histogram_buckets(metrics_text: str, name: str, labels: dict[str, str]) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of one Prometheus histogram series in a /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket" and all(sample.labels.get(k) == v for k, v in labels.items()):
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def histogram_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket; the top finite bound if in +Inf."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            width = count - lower_count
            return bound if width <= 0 else lower_bound + (bound - lower_bound) * (rank - lower_count) / width
        lower_bound, lower_count = bound, count
    return lower_bound


def rate_per_second(count: int, first: float | None, last: float | None) -> float | None:
    if not count or first is None or last is None or last <= first:
        return None
    return round(count / (last - first), 2)
