"""Small statistics over lists of numbers: percentiles (nearest rank),
median with min and max. Empty input gives None rather than raising, so a
failed run shows up as a gap in a table, not a crash of the renderer."""


def percentile(sorted_values, q):
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil without floats
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


def median(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def summary(values):
    """{median, min, max, n} of the non-None values, or None."""
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": median(v), "min": min(v), "max": max(v), "n": len(v)}
