"""The latency sketch: PostgreSQL and Python agree on buckets; merging and quantiles keep their promise."""

from __future__ import annotations

import random

import numpy as np
import pytest
from django.db import connection

from costline.usage import sketch


@pytest.mark.django_db
def test_postgresql_buckets_values_as_python_does() -> None:
    rng = random.Random(1)
    values = [0.0, 0.0004, 0.001, 1.0, 2.718281828459045, 1000.0, 86_400_000.0]
    values += [rng.lognormvariate(6, 2.5) for _ in range(5000)]
    with connection.cursor() as cursor:
        bucket = sketch.BUCKET_SQL.format(column="v")
        cursor.execute(
            f"SELECT {bucket} FROM unnest(%s::float8[]) WITH ORDINALITY AS t(v, i) ORDER BY i",  # noqa: S608
            [values],
        )
        in_sql = [row[0] for row in cursor.fetchall()]
        cursor.execute(f"SELECT {sketch.BUCKET_SQL.format(column='NULL::float8')}")
        assert cursor.fetchone()[0] is None  # no latency: no bucket, not the smallest one
    assert in_sql == [sketch.bucket_of(v) for v in values]


@pytest.mark.parametrize("seed", range(5))
def test_quantiles_are_within_half_a_percent_of_the_true_rank(seed: int) -> None:
    rng = random.Random(seed)
    values = [
        rng.lognormvariate(rng.uniform(3, 8), rng.uniform(0.2, 1.5)) for _ in range(rng.randrange(1, 20_000))
    ]
    blob = sketch.from_values(values)
    qs = (0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)
    for q, estimate in zip(qs, sketch.quantiles(blob, qs), strict=True):
        exact = sketch.exact_quantile(values, q)
        assert abs(estimate - exact) <= sketch.RELATIVE_ACCURACY * exact * (1 + 1e-9)


def test_a_merge_of_parts_is_the_sketch_of_the_whole() -> None:
    rng = random.Random(7)
    values = [rng.expovariate(1 / 300) for _ in range(10_000)]
    parts = [sketch.from_values(values[i : i + 997]) for i in range(0, len(values), 997)]
    whole = sketch.from_values(values)

    assert sketch.merge(parts) == whole
    assert sketch.merge_groups([b"".join(parts[:3]), b"", b"".join(parts[3:])]) == [
        sketch.merge(parts[:3]),
        b"",
        sketch.merge(parts[3:]),
    ]
    assert sketch.count(b"".join(parts)) == len(values)


def test_dense_histograms_answer_the_same_quantiles() -> None:
    rng = random.Random(11)
    groups = [[rng.lognormvariate(5, 1) for _ in range(rng.randrange(0, 3000))] for _ in range(12)]
    blobs = [sketch.from_values(g) for g in groups]
    qs = (0.5, 0.95, 0.99)

    low, matrix = sketch.histograms(blobs)
    dense = sketch.dense_quantiles(low, matrix, qs)

    for row, blob in zip(dense, blobs, strict=True):
        expected = sketch.quantiles(blob, qs)
        if expected[0] is None:
            assert np.isnan(row).all()
        else:
            assert row.tolist() == pytest.approx(expected, rel=1e-12)
    # Adding rows merges sketches.
    merged = sketch.dense_quantiles(low, matrix.sum(axis=0, keepdims=True), qs)[0]
    assert merged.tolist() == pytest.approx(sketch.quantiles(sketch.merge(blobs), qs), rel=1e-12)


def test_an_empty_sketch_has_no_quantiles_and_a_torn_one_is_refused() -> None:
    assert sketch.quantiles(b"", (0.5,)) == [None]
    with pytest.raises(ValueError, match="6-byte pairs"):
        sketch.quantiles(b"\x00\x01\x02", (0.5,))
