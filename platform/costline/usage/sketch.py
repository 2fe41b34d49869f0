"""Mergeable latency sketches: DDSketch's logarithmic buckets, stored compactly in rollups.

A value x > 0 (milliseconds) falls in bucket i = ceil(ln(x) / ln γ) with γ = e^0.01, i.e. bucket i
covers (γ^(i-1), γ^i]. Answering every value of bucket i with 2γ^i / (γ + 1) is off by at most
α = (γ − 1) / (γ + 1) ≈ 0.5 % relative, so a quantile read from a sketch is within 0.5 % of the
value of the true rank's sample: comfortably inside the 1 % the rollups promise.

A sketch is stored as bytes: (bucket int16, count int32) pairs, big-endian, sorted by bucket, no
bucket twice. That is what PostgreSQL builds itself from raw rows (`int2send(b) || int4send(n)`,
see BUCKET_SQL), and merging sketches is concatenation followed by `canonical`, which adds the
counts of equal buckets. Concatenation alone is already a correct (if longer) sketch, which is how a
query merges many buckets in one `string_agg` before reading quantiles.

Values below MIN_VALUE_MS (a cache hit answered in microseconds, a zero) count in MIN_VALUE_MS's
bucket; the bucket index fits int16 for any duration under 10^140 ms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

LN_GAMMA = 0.01
GAMMA = math.exp(LN_GAMMA)
RELATIVE_ACCURACY = (GAMMA - 1) / (GAMMA + 1)
MIN_VALUE_MS = 0.001
PAIR = np.dtype([("bucket", ">i2"), ("count", ">i4")])
EMPTY = b""

# The bucket of column `{column}` as PostgreSQL computes it; NULL for NULL (`greatest` alone would
# skip the NULL). Python's `bucket_of` agrees with it (tests/platform/usage/test_sketch.py).
SCALE = round(1 / LN_GAMMA)
BUCKET_SQL = (
    f"CASE WHEN {{column}} IS NOT NULL "
    f"THEN ceil(ln(greatest({{column}}, {MIN_VALUE_MS})) * {SCALE})::int2 END"
)


def bucket_of(value: float) -> int:
    return math.ceil(math.log(max(value, MIN_VALUE_MS)) * SCALE)


def bucket_value(bucket: int | npt.NDArray[np.int64]) -> float | npt.NDArray[np.float64]:
    """The value a bucket answers: the one with the least worst-case relative error over the bucket."""
    return 2 * np.exp(np.asarray(bucket, dtype=np.float64) * LN_GAMMA) / (GAMMA + 1)


def encode(buckets: npt.ArrayLike, counts: npt.ArrayLike) -> bytes:
    """Bytes of a sketch with these (bucket, count) pairs, which must already be canonical."""
    pairs = np.empty(len(np.asarray(buckets)), dtype=PAIR)
    pairs["bucket"] = buckets
    pairs["count"] = counts
    return pairs.tobytes()


def from_values(values: Iterable[float]) -> bytes:
    """A sketch of these values (tests and benchmarks; the rollups build theirs in SQL)."""
    buckets = np.array([bucket_of(v) for v in values], dtype=np.int64)
    if buckets.size == 0:
        return EMPTY
    unique, counts = np.unique(buckets, return_counts=True)
    return encode(unique, counts)


def pairs_of(blob: bytes | memoryview | None) -> npt.NDArray[np.void]:
    if not blob:
        return np.empty(0, dtype=PAIR)
    if len(blob) % PAIR.itemsize:
        raise ValueError(f"a sketch is a whole number of {PAIR.itemsize}-byte pairs, got {len(blob)} bytes")
    return np.frombuffer(blob, dtype=PAIR)


def canonical(blob: bytes | memoryview | None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(buckets ascending, counts) of a sketch, equal buckets of a concatenation added together."""
    pairs = pairs_of(blob)
    buckets = pairs["bucket"].astype(np.int64)
    counts = pairs["count"].astype(np.int64)
    if buckets.size < 2 or bool(np.all(buckets[1:] > buckets[:-1])):
        return buckets, counts
    unique, inverse = np.unique(buckets, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts, minlength=unique.size).astype(np.int64)


def merge(blobs: Iterable[bytes | memoryview | None]) -> bytes:
    """One canonical sketch of several."""
    buckets, counts = canonical(b"".join(bytes(b) for b in blobs if b))
    return encode(buckets, counts)


def merge_groups(blobs: Sequence[bytes | memoryview | None]) -> list[bytes]:
    """Canonical form of each of many concatenated sketches at once (one numpy pass, not a loop)."""
    sizes = np.fromiter(
        (len(b) // PAIR.itemsize if b else 0 for b in blobs), dtype=np.int64, count=len(blobs)
    )
    if sizes.sum() == 0:
        return [EMPTY] * len(blobs)
    pairs = np.frombuffer(b"".join(bytes(b) for b in blobs if b), dtype=PAIR)
    owner = np.repeat(np.arange(len(blobs), dtype=np.int64), sizes)
    buckets = pairs["bucket"].astype(np.int64)
    # One key per (owner, bucket): sorting it groups equal buckets of one owner, owners in order.
    key = owner * 65536 + (buckets + 32768)
    unique, inverse = np.unique(key, return_inverse=True)
    counts = np.bincount(inverse, weights=pairs["count"].astype(np.int64), minlength=unique.size)
    merged = np.empty(unique.size, dtype=PAIR)
    merged["bucket"] = (unique % 65536) - 32768
    merged["count"] = counts.astype(np.int64)
    ends = np.searchsorted(unique // 65536, np.arange(len(blobs)), side="right")
    starts = np.concatenate(([0], ends[:-1]))
    raw = merged.tobytes()
    size = PAIR.itemsize
    return [raw[s * size : e * size] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def count(blob: bytes | memoryview | None) -> int:
    return int(pairs_of(blob)["count"].astype(np.int64).sum())


def quantiles(blob: bytes | memoryview | None, qs: Sequence[float]) -> list[float | None]:
    """Values at quantiles `qs` (0..1) of a sketch, None when it holds no values.

    The q-quantile is the value of the sample of rank ⌈q·n⌉ (1-based; rank 1 for q = 0): the
    "nearest rank" definition, which names an observed latency rather than interpolating two.
    """
    buckets, counts = canonical(blob)
    total = int(counts.sum())
    if total == 0:
        return [None] * len(qs)
    cumulative = np.cumsum(counts)
    answers: list[float | None] = []
    for q in qs:
        if not 0 <= q <= 1:
            raise ValueError(f"a quantile is between 0 and 1, got {q}")
        rank = max(1, math.ceil(q * total))
        index = int(np.searchsorted(cumulative, rank, side="left"))
        answers.append(float(bucket_value(int(buckets[index]))))
    return answers


def histograms(blobs: Sequence[bytes | memoryview | None]) -> tuple[int, npt.NDArray[np.int64]]:
    """Dense counts of many sketches: (first bucket, matrix) with row i the buckets of blob i.

    Merging sketches is then adding rows, and their quantiles `dense_quantiles`: no sorting, so a
    query merging a million (bucket, count) pairs takes milliseconds.
    """
    sizes = np.fromiter(
        (len(b) // PAIR.itemsize if b else 0 for b in blobs), dtype=np.int64, count=len(blobs)
    )
    if sizes.sum() == 0:
        return 0, np.zeros((len(blobs), 1), dtype=np.int64)
    pairs = np.frombuffer(b"".join(bytes(b) for b in blobs if b), dtype=PAIR)
    buckets = pairs["bucket"].astype(np.int64)
    low, width = int(buckets.min()), int(buckets.max() - buckets.min()) + 1
    owner = np.repeat(np.arange(len(blobs), dtype=np.int64), sizes)
    flat = np.bincount(
        owner * width + (buckets - low),
        weights=pairs["count"].astype(np.float64),
        minlength=len(blobs) * width,
    )
    return low, flat.astype(np.int64).reshape(len(blobs), width)


def dense_quantiles(low: int, matrix: npt.NDArray[np.int64], qs: Sequence[float]) -> npt.NDArray[np.float64]:
    """Quantiles (columns) of each row of a `histograms` matrix; NaN for an empty row."""
    if any(not 0 <= q <= 1 for q in qs):
        raise ValueError(f"quantiles are between 0 and 1, got {list(qs)}")
    cumulative = np.cumsum(matrix, axis=1)
    totals = cumulative[:, -1]
    result = np.full((matrix.shape[0], len(qs)), np.nan)
    present = totals > 0
    for column, q in enumerate(qs):
        rank = np.maximum(1, np.ceil(q * totals))
        index = (cumulative < rank[:, None]).sum(axis=1)  # first bucket whose running count reaches rank
        result[:, column] = np.where(present, bucket_value(low + index), np.nan)
    return result


def exact_quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank quantile of raw values, the definition `quantiles` estimates (for tests)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]
