"""Benchmark: the guardrail detectors on every incoming message, before any model or tool cost.

- Speed: 10,000 mixed messages (attacks, ordinary and hard-negative support messages, messages
  with PII and PII near misses, a quarter of them padded to ~2 KB with ordinary support text)
  each go through what check_input runs: normalize, find_injections with the default policy's
  rules, and find_pii. Prints messages per second and p50/p95 per message, overall and for the
  ~2 KB messages. Target: p95 < 1 ms for a 2 KB message.
- Quality on the labelled corpus in tests/data/guardrails/: injection detection rate (target
  >= 90%), false positives on benign messages, any rule kill or flag (target <= 1%), PII recall
  per kind (target >= 95%), and findings on the PII near misses.

Pure Python: needs neither Django settings nor a database.
python bench/guardrails.py
"""

import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from apps.guardrails.detectors import compile_rules, find_injections, find_pii, normalize  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "guardrails"
POLICY = ROOT / "apps" / "guardrails" / "default_policy.yaml"
MESSAGES = 10_000
PADDED_SHARE = 0.25
PADDED_CHARS = 2_048


def load(name: str) -> list[dict]:
    with (CORPUS / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def build_messages(rng: random.Random, labelled: list[str], filler: list[str]) -> list[tuple[str, bool]]:
    """(text, padded) pairs: labelled messages, a share of them grown to ~2 KB with ordinary
    support text around them (the attack or PII somewhere in the middle)."""
    messages = []
    for _ in range(MESSAGES):
        text = rng.choice(labelled)
        if rng.random() < PADDED_SHARE:
            before, after = [], []
            while len(text) + sum(map(len, before)) + sum(map(len, after)) < PADDED_CHARS:
                (before if rng.random() < 0.5 else after).append(rng.choice(filler))
            text = " ".join([*before, text, *after])[:PADDED_CHARS]
            messages.append((text, True))
        else:
            messages.append((text, False))
    return messages


def check(text: str, rules) -> None:
    normalized = normalize(text)
    find_injections(text, rules, normalized=normalized)
    find_pii(text)


def speed(rules, injections, benign, pii, pii_negatives) -> None:
    rng = random.Random(7)
    labelled = [row["text"] for row in injections + benign + pii + pii_negatives]
    filler = [row["text"] for row in benign if row["note"] == "ordinary support message"]
    messages = build_messages(rng, labelled, filler)
    for text, _ in messages[:200]:  # warm up
        check(text, rules)
    timings: list[tuple[float, bool]] = []
    started = time.perf_counter()
    for text, padded in messages:
        begin = time.perf_counter()
        check(text, rules)
        timings.append(((time.perf_counter() - begin) * 1000, padded))
    elapsed = time.perf_counter() - started
    every = [ms for ms, _ in timings]
    padded = [ms for ms, is_padded in timings if is_padded]
    sizes = [len(text) for text, is_padded in messages if is_padded]
    print(f"speed: {len(messages):,} messages, {len(rules)} injection rules, all PII kinds")
    print(f"  throughput          {len(messages) / elapsed:,.0f} messages/s")
    print(f"  all messages        p50 {statistics.median(every):.3f} ms  p95 {percentile(every, 0.95):.3f} ms")
    print(
        f"  ~2 KB messages      p50 {statistics.median(padded):.3f} ms  p95 {percentile(padded, 0.95):.3f} ms"
        f"  max {max(padded):.3f} ms  ({len(padded):,} messages, {statistics.mean(sizes):,.0f} chars on average)"
    )
    verdict = "met" if percentile(padded, 0.95) < 1.0 else "MISSED"
    print(f"  target p95 < 1 ms per 2 KB message: {verdict}")


def quality(rules, injections, benign, pii, pii_negatives) -> None:
    detected = sum(bool(find_injections(row["text"], rules)) for row in injections)
    rate = detected / len(injections)
    flagged = [row for row in benign if find_injections(row["text"], rules)]
    hard = [row for row in benign if row["note"].startswith("hard negative")]
    hard_flagged = [row for row in flagged if row["note"].startswith("hard negative")]
    fp_rate = len(flagged) / len(benign)
    print("\nquality on the labelled corpus")
    print(f"  injection detection {detected}/{len(injections)} = {rate:.1%} (target >= 90%)")
    print(
        f"  false positives     {len(flagged)}/{len(benign)} = {fp_rate:.2%} (target <= 1%);"
        f" hard negatives {len(hard_flagged)}/{len(hard)}"
    )
    found, total = Counter(), Counter()
    for row in pii:
        findings = find_pii(row["text"])
        for label in row["pii"]:
            start = row["text"].index(label["value"])
            end = start + len(label["value"])
            total[label["kind"]] += 1
            if any(f.kind == label["kind"] and f.start <= start and f.end >= end for f in findings):
                found[label["kind"]] += 1
    for kind in ("card", "ssn", "iban", "email", "phone", "secret"):
        print(f"  PII recall {kind:<8} {found[kind]}/{total[kind]} = {found[kind] / total[kind]:.1%} (target >= 95%)")
    near_misses = Counter(f.kind for row in pii_negatives for f in find_pii(row["text"]))
    print(f"  findings on {len(pii_negatives)} PII near misses: {dict(near_misses) or 'none'}")


def main() -> None:
    policy = yaml.safe_load(POLICY.read_text(encoding="utf-8"))
    rules = compile_rules(policy["input"]["injection"]["rules"])
    corpus = [load(name) for name in ("injections.jsonl", "benign.jsonl", "pii.jsonl", "pii_negatives.jsonl")]
    speed(rules, *corpus)
    quality(rules, *corpus)


if __name__ == "__main__":
    main()
