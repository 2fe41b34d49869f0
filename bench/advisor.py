"""Advisor benchmark: all recommendations for one tenant with 10 million calls in 30 days.

1. Writes the calls with COPY (bench/rollup.py's generator: its models, features, diurnal traffic and
   prices), then gives the chat calls prompt evidence as the collector would have stored it: 25% repeat
   one of 40 popular prompts of their feature and model, 10% are near-duplicates of one (a SimHash a
   bit away), the rest unique; each feature shares a system prompt (its prefix) of 1,200–3,200 tokens;
   chat-like features carry sessions.
2. Times `recommend()` (target: under 2 minutes), and separately the read of the window's calls and
   one replay of a policy with every lever on, as calls/s.

    .venv/bin/python bench/advisor.py                 # 10 M calls
    .venv/bin/python bench/advisor.py --calls 1000000 # smaller; --reuse keeps the last run's data
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rollup  # bench/rollup.py, beside this file

# {u}: a uniform number 0..999 per call, from its random span id.
U = "(abs(hashtext(span_id || 'u')) % 1000)"
EVIDENCE_SQL = """
UPDATE usage_llmcall SET
    prompt_hash = CASE
        WHEN {u} < 250 THEN hashtext(feature || model)::bigint * 1000 + {u} % 40
        ELSE hashtext(span_id)::bigint * 7919 + hashtext(trace_id) END,
    prompt_simhash = CASE
        WHEN {u} < 250 THEN (hashtext(feature || model)::bigint << 32) | ({u} % 40)
        WHEN {u} < 350
            THEN ((hashtext(feature || model)::bigint << 32) | ({u} % 40)) # (1::bigint << ({u} % 5 + 8))
        ELSE (hashtext(span_id)::bigint << 32) | (hashtext(trace_id)::bigint & 4294967295) END,
    prefix_hash = hashtext(feature),
    prompt_tokens = input_tokens,
    prefix_tokens = least(input_tokens, 1200 + abs(hashtext(feature)) % 2000),
    session_id = CASE WHEN feature IN ('chat', 'support-reply', 'qa')
        THEN 'session-' || abs(hashtext(trace_id)) % 50000 END
WHERE tenant_id = %s AND operation = 'chat'
""".replace("{u}", U)


def add_evidence(tenant_id: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        # No parameters: the SQL's % are modulo operators, and the tenant id is an int we made.
        cursor.execute(EVIDENCE_SQL.replace("%s", str(int(tenant_id))))
        cursor.execute("ANALYZE usage_llmcall")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--database", default="costline_bench_advisor")
    parser.add_argument("--reuse", action="store_true", help="keep the data of the last run")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rollup.prepare_database(args.database, args.reuse)
    from costline.advisor.findings import ModelSwap, Policy
    from costline.advisor.recommend import recommend
    from costline.advisor.replay import Calls, replay
    from costline.tenancy.models import Organization
    from costline.usage.models import LLMCall

    timings: list[tuple[str, str, str]] = []
    org = Organization.objects.order_by("id").first()
    if not (args.reuse and org is not None):
        began = time.monotonic()
        rollup.say(f"writing {args.calls:,} calls over {args.days} days for one tenant ...")
        (tenant,) = rollup.generate(args.calls, 1, args.days, args.seed)
        org = tenant.org
        written = time.monotonic() - began
        timings.append(("write calls (COPY)", f"{written:,.1f} s", f"{args.calls / written:,.0f} calls/s"))
        began = time.monotonic()
        rollup.say("adding prompt evidence ...")
        add_evidence(org.id)
        timings.append(("add prompt evidence (UPDATE)", f"{time.monotonic() - began:,.1f} s", ""))
    assert org is not None
    calls = LLMCall.objects.filter(tenant_id=org.id).count()
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    start = now - timedelta(days=args.days + 1)

    rollup.say("reading the window's calls ...")
    began = time.monotonic()
    loaded = Calls.load(org.id, start, now)
    read = time.monotonic() - began
    timings.append(("read calls (COPY → numpy)", f"{read:,.1f} s", f"{loaded.n / read:,.0f} calls/s"))

    policy = Policy(
        response_cache_window_s=3600,
        semantic_cache_threshold=0.95,
        prefix_cache=True,
        swaps=(ModelSwap("gpt-4o", "gpt-4o-mini", cascade=True, escalation_rate=0.2),),
        max_output_tokens={"summarise": 400},
        batch_non_interactive=True,
    )
    began = time.monotonic()
    result = replay(loaded, policy)
    took = time.monotonic() - began
    timings.append(("one replay, every lever on", f"{took:,.2f} s", f"{loaded.n / took:,.0f} calls/s"))

    rollup.say("recommend() ...")
    began = time.monotonic()
    findings = recommend(org.id, now, days=args.days + 1)
    took = time.monotonic() - began
    timings.append(("recommend() (read + every replay)", f"{took:,.1f} s", f"{len(findings)} findings"))

    print(f"\nAdvisor benchmark: one tenant, {calls:,} calls over {args.days} days\n")
    print(f"| {'step':<36} | {'time':>10} | {'rate':>18} |")
    print(f"|{'-' * 38}|{'-' * 12}|{'-' * 20}|")
    for step, spent, rate in timings:
        print(f"| {step:<36} | {spent:>10} | {rate:>18} |")
    print(f"\nAll levers: ${result.baseline_usd:,.2f} → ${result.replayed_usd:,.2f} over the window\n")
    print(f"| {'kind':<15} | {'key':<52} | {'$/month':>12} | {'conf':>4} |")
    print(f"|{'-' * 17}|{'-' * 54}|{'-' * 14}|{'-' * 6}|")
    for f in findings[:20]:
        saving, kind = f.monthly_saving_usd, f.kind.value
        print(f"| {kind:<15} | {f.key[:52]:<52} | {saving:>12,.2f} | {f.confidence:>4.2f} |")


if __name__ == "__main__":
    main()
