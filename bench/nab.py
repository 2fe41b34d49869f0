#!/usr/bin/env python
"""The product's anomaly detector on the Numenta Anomaly Benchmark (NAB v1.1).

Runs `costline.alerts.detection` with its default `DetectorConfig()`, the settings the product
runs, over the 58 NAB series in ../shared/data/nab/, writes NAB result files and scores them with
../shared/data/nab/nab_score.py (one threshold for the whole corpus, chosen by the scorer, as NAB
does). Only the feeding differs from the product: each series comes with its own timestamps (NAB
rows are 1 minute to 1 hour apart); the 58 are scored in one batch, padded with gaps at the end,
which a causal detector never sees.

NAB wants scores in [0, 1]; the detector's surprise s (−log10 tail probability, unbounded) is mapped
by s / (s + 10), which is monotone and does not saturate, so the scorer's threshold sweep sees the
same order of points as the product's threshold would.

    .venv/bin/python bench/nab.py                    # ~1 min on 2 cores
    .venv/bin/python bench/nab.py --by-category      # also the per-category diagnostics

Target (issue 7): standard score above 70.1 (Numenta HTM); the best published is 74.9 (ARTime).
The last line is `NAB standard=<score> reward_low_FP=<score> reward_low_FN=<score>`.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from costline.alerts.detection import DetectorConfig, score_many

NAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"
PUBLISHED = ["ARTime", "numenta", "contextOSE", "htmjava", "earthgeckoSkyline", "knncad", "windowedGaussian"]


def load(nab: Path) -> tuple[list[str], list[list[str]], list[np.ndarray], list[np.ndarray]]:
    windows = json.loads((nab / "labels" / "combined_windows.json").read_text())
    names, raw_ts, values, seconds = [], [], [], []
    for rel in sorted(windows):
        with (nab / "data" / rel).open(newline="") as f:
            rows = list(csv.DictReader(f))
        names.append(rel)
        raw_ts.append([r["timestamp"] for r in rows])
        values.append(np.array([float(r["value"]) for r in rows]))
        stamps = np.array([r["timestamp"] for r in rows], dtype="datetime64[s]")
        seconds.append(stamps.astype(np.int64))
    return names, raw_ts, values, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nab-root", type=Path, default=NAB)
    ap.add_argument("--out", type=Path, help="keep the result CSVs here (default: a temporary folder)")
    ap.add_argument("--by-category", action="store_true")
    args = ap.parse_args()
    if not (args.nab_root / "nab_score.py").exists():
        sys.exit(f"NAB not found at {args.nab_root}: it lives in ../shared/data/nab beside the checkout")

    t0 = time.perf_counter()
    names, raw_ts, values, seconds = load(args.nab_root)
    n = max(v.size for v in values)
    x = np.full((len(values), n), np.nan)
    t = np.zeros((len(values), n), dtype=np.int64)
    for k, (v, s) in enumerate(zip(values, seconds, strict=True)):
        x[k, : v.size] = v
        t[k, : v.size] = s
        t[k, v.size :] = s[-1]
    print(
        f"loaded {len(names)} series, {sum(v.size for v in values):,} rows "
        f"in {time.perf_counter() - t0:.1f} s"
    )

    t1 = time.perf_counter()
    scores = score_many(x, t, DetectorConfig())
    elapsed = time.perf_counter() - t1
    print(f"scored in {elapsed:.1f} s ({sum(v.size for v in values) / elapsed:,.0f} rows/s)")

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for k, rel in enumerate(names):
            s = np.nan_to_num(scores.score[k, : values[k].size], nan=0.0)
            s01 = s / (s + 10.0)
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["timestamp", "value", "anomaly_score"])
                for ts, val, a in zip(raw_ts[k], values[k], s01, strict=True):
                    w.writerow([ts, repr(float(val)), repr(float(a))])
        cmd = [sys.executable, str(args.nab_root / "nab_score.py"), str(out), "--profile", "all"]
        if args.by_category:
            cmd.append("--by-category")
        print("scoring with nab_score.py …", flush=True)
        report = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    print(report)

    mine = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+)\s+score=\s*([-\d.]+)", report, re.M)}
    published = json.loads((args.nab_root / "results" / "final_results.json").read_text())
    print(f"{'detector':22s} {'standard':>9s} {'low FP':>9s} {'low FN':>9s}")
    print(
        f"{'costline (this)':22s} {mine['standard']:9.2f} {mine['reward_low_FP_rate']:9.2f} "
        f"{mine['reward_low_FN_rate']:9.2f}"
    )
    for name in PUBLISHED:
        p = published.get(name)
        if p:
            print(
                f"{name:22s} {p['standard']:9.2f} {p['reward_low_FP_rate']:9.2f} "
                f"{p['reward_low_FN_rate']:9.2f}"
            )
    print(
        f"NAB standard={mine['standard']:.2f} reward_low_FP={mine['reward_low_FP_rate']:.2f} "
        f"reward_low_FN={mine['reward_low_FN_rate']:.2f}"
    )


if __name__ == "__main__":
    main()
