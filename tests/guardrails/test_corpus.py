"""The default policy's rules and the PII detectors against the labelled corpus in
tests/data/guardrails/ (see its README for how it was written and what the rates mean)."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from apps.guardrails.detectors import compile_rules, find_injections, find_pii, normalize

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "guardrails"
POLICY = ROOT / "apps" / "guardrails" / "default_policy.yaml"

MIN_DETECTION_RATE = 0.90  # share of attacks on which at least one rule fires
MAX_FALSE_POSITIVE_RATE = 0.01  # share of benign messages on which any rule fires, kill or flag
MIN_PII_RECALL = 0.95  # per kind: share of labelled values covered by a finding of that kind


def load(name: str) -> list[dict]:
    with (CORPUS / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def policy() -> dict:
    return yaml.safe_load(POLICY.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rules(policy):
    return compile_rules(policy["input"]["injection"]["rules"])


def test_corpus_has_the_promised_size_and_labels():
    injections, benign = load("injections.jsonl"), load("benign.jsonl")
    pii, negatives = load("pii.jsonl"), load("pii_negatives.jsonl")
    assert len(injections) >= 150 and {row["label"] for row in injections} == {"injection"}
    assert len(benign) >= 400 and {row["label"] for row in benign} == {"benign"}
    assert sum(row["note"].startswith("hard negative") for row in benign) >= 120
    assert len(pii) >= 250 and len(negatives) >= 100
    for row in pii:
        for label in row["pii"]:
            assert label["value"] in row["text"], label
    assert len({row["text"] for row in injections + benign}) == len(injections) + len(benign)


def test_default_rules_are_well_formed(policy, rules):
    specs = policy["input"]["injection"]["rules"]
    assert 15 <= len(rules) <= 40
    for spec in specs:
        assert set(spec) == {"id", "pattern", "action"}
        assert re.fullmatch(r"[a-z][a-z0-9_]*", spec["id"]), spec["id"]
        assert spec["action"] in {"kill", "flag"}
        # Matched against lower-case text: an upper-case letter (outside \W, \b, ...) could never match.
        assert not re.search(r"[A-Z]", re.sub(r"\\[A-Za-z]", "", spec["pattern"])), spec["id"]


def test_injection_detection_rate(rules):
    injections = load("injections.jsonl")
    missed = [row["text"] for row in injections if not find_injections(row["text"], rules)]
    rate = 1 - len(missed) / len(injections)
    assert rate >= MIN_DETECTION_RATE, f"detected {rate:.1%} of {len(injections)}; missed: {missed}"


def test_every_obfuscation_technique_is_caught(rules):
    """Each technique's variants of the core attacks are detected, not only on average."""
    by_technique: dict[str, list[bool]] = {}
    for row in load("injections.jsonl"):
        if ";" not in row["note"]:  # the obfuscated variants carry the technique alone
            by_technique.setdefault(row["note"], []).append(bool(find_injections(row["text"], rules)))
    assert len(by_technique) >= 10
    for technique, detected in by_technique.items():
        assert all(detected), f"{technique}: {detected.count(False)} of {len(detected)} missed"


def test_false_positive_rate_on_benign_messages(rules):
    benign = load("benign.jsonl")
    fired = {row["text"]: [f.rule for f in find_injections(row["text"], rules)] for row in benign}
    fired = {text: ids for text, ids in fired.items() if ids}
    rate = len(fired) / len(benign)
    assert rate <= MAX_FALSE_POSITIVE_RATE, f"{rate:.2%} of {len(benign)} benign messages fired: {fired}"


def test_pii_recall_per_kind():
    found, total = Counter(), Counter()
    missed = []
    for row in load("pii.jsonl"):
        findings = find_pii(row["text"])
        for label in row["pii"]:
            start = row["text"].index(label["value"])
            end = start + len(label["value"])
            total[label["kind"]] += 1
            if any(f.kind == label["kind"] and f.start <= start and f.end >= end for f in findings):
                found[label["kind"]] += 1
            else:
                missed.append(label)
    assert set(total) == {"card", "ssn", "iban", "email", "phone", "secret"}
    for kind in total:
        assert found[kind] / total[kind] >= MIN_PII_RECALL, f"{kind}: {found[kind]}/{total[kind]}; missed {missed}"


def test_no_card_ssn_or_iban_on_near_misses():
    wrong = [
        (row["note"], row["text"][f.start : f.end], f.kind)
        for row in load("pii_negatives.jsonl")
        for f in find_pii(row["text"], kinds=("card", "ssn", "iban"))
    ]
    assert wrong == []


def test_the_fast_path_agrees_with_a_plain_search_on_every_message(rules):
    """find_injections tries a rule only where one of its starting strings occurs; on every
    corpus message that must give exactly the rules a plain regex.search gives."""
    for name in ("injections.jsonl", "benign.jsonl", "pii.jsonl", "pii_negatives.jsonl"):
        for row in load(name):
            normalized = normalize(row["text"])
            expected = [rule.id for rule in rules if rule.regex.search(normalized)]
            assert [f.rule for f in find_injections(row["text"], rules, normalized=normalized)] == expected, row
