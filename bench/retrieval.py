"""Benchmark: governed knowledge retrieval (``knowledge.retrieve``) on PostgreSQL.

Generates 100,000 passages across 2,000 sources and 5 tenants. Words follow a Zipf-Mandelbrot
distribution (support words in the head, 20,000 generated words in the long tail), and come
in bursts: each source is about a few support words, which recur in its passages. Passages
of 40-120 words; mixed lifecycle (mostly approved; some draft, deprecated, and deleted with
no passages), freshness (some overdue with policy exclude, some with warn), visibility
(public, internal, restricted to roles, human only) and scope (many unscoped; others scoped
on regions, segments, channels, products and brands). Loaded with COPY; the trigger computes
the search vectors; then VACUUM ANALYZE.

Then 1,000 questions of 4-10 words (common words, some rare ones, a few only rare or unknown
words), each in a random RetrievalContext, timed end to end (Python and SQL) two ways in the
same run, alternating in random order after a warm-up:

- governed: ``apps.knowledge.retrieval.retrieve(..., record_gap=False)``, every rule in its
  query (on a gap, retrieve also counts the withheld matches: a second query, included);
- ungoverned: the same full-text query (same words, tsquery, ranking, order, k and columns,
  built by the same ``ranked_rows``) over every passage of every tenant, with no
  tenant, lifecycle, freshness, visibility or scope condition. It ranks ~10x as many
  passages; for a quicker look, RETRIEVAL_BENCH_BASELINE_EVERY=4 runs it on every 4th
  question only (paired with the governed timings of the same questions).

Prints p50/p95/p99/mean for each, the p95 ratio, matched/weak/gap counts, and checks the
governed results of 200 questions against the rules, recomputed in Python from the generated
data. Targets: governed p95 < 50 ms; governed p95 <= 1.5x ungoverned p95. The machine's load
average is printed: other processes on the same CPUs inflate every figure.

Runs on its own throwaway database, bench_retrieval (created and dropped here), on the
server DATABASE_URL names (default postgres://postgres@127.0.0.1:5432/bench_retrieval).
Smaller runs for a quick look: RETRIEVAL_BENCH_PASSAGES=20000 RETRIEVAL_BENCH_QUERIES=200.
RETRIEVAL_BENCH_EXPLAIN=1 also prints EXPLAIN ANALYZE of the slowest governed question;
RETRIEVAL_BENCH_KEEP=1 leaves the database in place afterwards, to look at plans by hand.
python bench/retrieval.py
"""

import datetime
import itertools
import os
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
    os.environ["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/bench_retrieval"
os.environ["DEBUG"] = "false"
os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-not-used-anywhere-else-0123456789")
os.environ.setdefault("AUDIT_SIGNING_KEY", "benchmark-only-audit-signing-key")
os.environ.pop("REDIS_URL", None)
os.environ["KNOWLEDGE_SEARCH_BACKEND"] = "auto"

import django  # noqa: E402 — settings come from the environment set above

django.setup()

from django.db import connection, connections  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402

from apps.accounts.choices import RoleKind  # noqa: E402
from apps.accounts.models import Tenant, User  # noqa: E402
from apps.agents.choices import Channel  # noqa: E402
from apps.knowledge.choices import Audience, Lifecycle, SourceKind, StalePolicy, Visibility  # noqa: E402
from apps.knowledge.models import KnowledgeSource, Passage, build_scope_tokens  # noqa: E402
from apps.knowledge.retrieval import (  # noqa: E402
    RetrievalContext,
    RetrievalStatus,
    eligible_sources,
    match_status,
    prepare_question,
    ranked_rows,
    retrieve,
    search_backend,
)
from apps.knowledge.text import STOPWORDS, coverage, fingerprint, split_passages  # noqa: E402

TENANTS = 5
SOURCES = int(os.environ.get("RETRIEVAL_BENCH_SOURCES", "2000"))
PASSAGES = int(os.environ.get("RETRIEVAL_BENCH_PASSAGES", "100000"))
QUERIES = int(os.environ.get("RETRIEVAL_BENCH_QUERIES", "1000"))
# The ungoverned path ranks every matching passage of every tenant: ~10x the governed
# time. RETRIEVAL_BENCH_BASELINE_EVERY=N runs it on every Nth question only (paired: the
# same questions, the same run) for a quicker look; by default it runs on all of them.
BASELINE_EVERY = int(os.environ.get("RETRIEVAL_BENCH_BASELINE_EVERY", "1"))
WARM_UP = min(100, QUERIES)
K = 5
CHECKED_QUERIES = 200  # governed results checked rule by rule against the generated data
SEED = 7

# --- Vocabulary ----------------------------------------------------------------------------

SUPPORT_WORDS = """
refund order shipping warranty invoice delivery return exchange account password login payment card charge
subscription cancel cancellation billing address tracking package parcel damaged missing replacement repair
battery charger blender kettle toaster mixer vacuum headphones speaker laptop tablet phone screen cable
adapter voucher coupon discount promotion gift loyalty points credit debit bank transfer paypal receipt vat tax
customs duty courier carrier express standard international domestic pickup locker store branch collection
stock backorder preorder availability price match guarantee policy terms conditions privacy data deletion
export consent email notification sms verification code reset unlock blocked suspended fraud chargeback
dispute escalation complaint feedback survey rating review agent supervisor callback appointment installation
manual instructions setup firmware update software app pairing bluetooth wifi error fault defect recall
safety label size colour model serial number registration proof purchase days weeks business hours deadline
window eligible eligibility exception approval manager partial full restocking fee prepaid box packaging seal
opened unopened used refurbished outlet clearance bundle accessory spare part
engineer technician visit schedule reschedule delay late lost stolen signature neighbour doorstep
""".split()  # noqa: SIM905 — a list of words reads as one
STARTERS = (
    "how do i",
    "how can i",
    "can i",
    "what is the",
    "why was my",
    "where is my",
    "is there a",
    "how long does",
    "when will my",
    "do you",
    "i",
    "my",
    "",
)
FILLER = ("the", "a", "to", "of", "and", "for", "your", "is", "in", "with", "on", "we", "it", "be", "or", "if")
TAIL_WORDS = 20_000
ZIPF_EXPONENT = 1.05
ZIPF_OFFSET = 20  # Zipf-Mandelbrot: flattens the head, as for content words once stopwords are gone
TOPIC_WORDS = 6  # each source is about a few support words (refunds of blenders, say)...
TOPIC_SHARE = 0.25  # ...which make this share of its passages' words: words come in bursts

REGIONS = ("us", "ca", "eu", "uk", "de", "fr", "au", "apac", "latam", "mea")
SEGMENTS = ("consumer", "smb", "enterprise", "vip", "education", "public_sector")
PRODUCTS = ("blender", "kettle", "toaster", "mixer", "vacuum", "audio", "laptop", "tablet", "phone", "smart_home")
CHANNELS = tuple(Channel.values)
# Role kinds by how often an employee asking holds them.
ROLE_WEIGHTS = {
    RoleKind.SUPPORT_AGENT: 10,
    RoleKind.SUPPORT_LEAD: 4,
    RoleKind.KNOWLEDGE_OWNER: 2,
    RoleKind.COMPLIANCE: 1,
    RoleKind.SECURITY: 1,
    RoleKind.AGENT_OWNER: 1,
    RoleKind.ADMIN: 1,
}


def brands_of(tenant_index: int) -> tuple[str, ...]:
    return tuple(f"t{tenant_index}-brand{number}" for number in range(1, 5))


def generated_words(rng: random.Random, count: int, syllables: list[str], taken: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < count:
        word = "".join(rng.choice(syllables) for _ in range(rng.choice((2, 2, 3, 3, 4))))
        if word not in taken and word not in STOPWORDS:
            taken.add(word)
            words.append(word)
    return words


class Vocabulary:
    """Support words in the head of a Zipf-Mandelbrot distribution, generated words in its
    long tail; ``unknown`` words appear in no passage (typos, names nobody documented)."""

    def __init__(self, rng: random.Random):
        consonants, vowels = "bdfgklmnprstvz", "aeiou"
        syllables = [c + v for c in consonants for v in vowels] + [c + v + "n" for c in "bdkmrst" for v in vowels]
        head = list(dict.fromkeys(SUPPORT_WORDS))
        rng.shuffle(head)
        taken = set(head)
        self.words = head + generated_words(rng, TAIL_WORDS, syllables, taken)
        self.head_size = len(head)
        weights = [1 / (rank + ZIPF_OFFSET) ** ZIPF_EXPONENT for rank in range(1, len(self.words) + 1)]
        self.cumulative = list(itertools.accumulate(weights))
        self.head_cumulative = self.cumulative[: self.head_size]
        self.unknown = generated_words(rng, 500, ["zq" + v for v in vowels] + ["xv" + v for v in vowels], taken)

    def draw(self, rng: random.Random, count: int) -> list[str]:
        return rng.choices(self.words, cum_weights=self.cumulative, k=count)

    def common(self, rng: random.Random) -> str:
        return rng.choices(self.words[: self.head_size], cum_weights=self.head_cumulative)[0]

    def rare(self, rng: random.Random) -> str:
        return self.words[rng.randrange(self.head_size, len(self.words))]


def prose(rng: random.Random, vocabulary: Vocabulary, topic: list[str], words: int) -> tuple[str, set[str]]:
    """``words`` words, in sentences: function words, the source's topic words and words of
    the whole Zipf-distributed vocabulary. Also returns the vocabulary words it used."""
    content = vocabulary.draw(rng, words)
    out: list[str] = []
    used: set[str] = set()
    sentence_left = rng.randint(6, 16)
    for word in content:
        draw = rng.random()
        if draw < 0.35:
            out.append(rng.choice(FILLER))
        else:
            out.append(rng.choice(topic) if draw < 0.35 + 0.65 * TOPIC_SHARE else word)
            used.add(out[-1])
        sentence_left -= 1
        if sentence_left == 0:
            out[-1] += "."
            sentence_left = rng.randint(6, 16)
    text = " ".join(out)
    if len(text) > 1150:  # one passage each: stay under text.MAX_PASSAGE_CHARS
        text = text[:1150].rsplit(" ", 1)[0]
    return text[0].upper() + text[1:].rstrip(".") + ".", used


# --- Sources and passages --------------------------------------------------------------------


def pick_some(rng: random.Random, values: tuple[str, ...], most: int = 3) -> list[str]:
    return sorted(rng.sample(values, rng.randint(1, most)))


def make_source(rng: random.Random, tenant: Tenant, tenant_index: int, owner: User, number: int, today) -> dict:
    """The governance fields of one source: lifecycle, freshness, visibility and scope."""
    status = rng.choices(
        [Lifecycle.APPROVED, Lifecycle.DRAFT, Lifecycle.DEPRECATED, Lifecycle.DELETED], weights=[80, 8, 7, 5]
    )[0]
    visibility = rng.choices(
        [Visibility.PUBLIC, Visibility.INTERNAL, Visibility.RESTRICTED, Visibility.HUMAN_ONLY], weights=[45, 35, 15, 5]
    )[0]
    roles = []
    if visibility == Visibility.RESTRICTED:
        roles = sorted(rng.sample([k for k in ROLE_WEIGHTS if k != RoleKind.SUPPORT_AGENT], rng.randint(1, 2)))
    fields = {"brands": [], "regions": [], "products": [], "segments": [], "channels": []}
    if rng.random() < 0.55:  # scoped on one or more dimensions; the rest apply everywhere
        while not any(fields.values()):
            if rng.random() < 0.5:
                fields["regions"] = pick_some(rng, REGIONS)
            if rng.random() < 0.35:
                fields["segments"] = pick_some(rng, SEGMENTS, 2)
            if rng.random() < 0.3:
                fields["channels"] = pick_some(rng, CHANNELS)
            if rng.random() < 0.4:
                fields["products"] = pick_some(rng, PRODUCTS)
            if rng.random() < 0.25:
                fields["brands"] = pick_some(rng, brands_of(tenant_index), 2)
    cadence = rng.choice((30, 90, 90, 180, 365))
    last_reviewed, stale_policy, stale_since = None, rng.choice((StalePolicy.EXCLUDE, StalePolicy.WARN)), None
    if status in (Lifecycle.APPROVED, Lifecycle.DEPRECATED):
        if rng.random() < 0.2:  # overdue for review
            last_reviewed = today - datetime.timedelta(days=cadence + rng.randint(1, 200))
            if status == Lifecycle.APPROVED and rng.random() < 0.7:
                stale_since = timezone.now() - datetime.timedelta(days=rng.randint(0, 30))
        else:
            last_reviewed = today - datetime.timedelta(days=rng.randint(0, cadence))
    return {
        "tenant": tenant,
        "owner": owner,
        "created_by": owner,
        "kind": rng.choice(SourceKind.values),
        "status": status,
        "visibility": visibility,
        "restricted_roles": roles,
        "review_cadence_days": cadence,
        "last_reviewed_on": last_reviewed,
        "review_due_on": last_reviewed + datetime.timedelta(days=cadence) if last_reviewed else None,
        "stale_policy": stale_policy,
        "stale_since": stale_since,
        "approved_by": owner if status in (Lifecycle.APPROVED, Lifecycle.DEPRECATED) else None,
        "approved_at": timezone.now() if status in (Lifecycle.APPROVED, Lifecycle.DEPRECATED) else None,
        "deleted_by": owner if status == Lifecycle.DELETED else None,
        "deleted_at": timezone.now() if status == Lifecycle.DELETED else None,
        "deletion_reason": "Obsolete" if status == Lifecycle.DELETED else "",
        "version": rng.randint(1, 6),
        "origin_url": f"https://help.example.com/t{tenant_index}/articles/{number}",
        **fields,
    }


def passage_counts(rng: random.Random, sources: int, passages: int) -> list[int]:
    """``passages`` split unevenly over ``sources`` (short FAQs to long manuals), each >= 1."""
    weights = [rng.lognormvariate(0, 0.6) for _ in range(sources)]
    total = sum(weights)
    counts = [max(1, int(weight / total * passages)) for weight in weights]
    for index in itertools.cycle(range(sources)):
        if sum(counts) == passages:
            break
        if sum(counts) < passages:
            counts[index] += 1
        elif counts[index] > 1:
            counts[index] -= 1
    return counts


def load(rng: random.Random, vocabulary: Vocabulary, today) -> tuple[dict[int, KnowledgeSource], Counter]:
    """Create the tenants, owners, sources and passages; return the sources by id and how
    many passages hold each vocabulary word."""
    tenants = [Tenant.objects.create(name=f"Bench tenant {n}", slug=f"bench-{n}") for n in range(1, TENANTS + 1)]
    owners = [User.objects.create(username=f"owner-{n}") for n in range(1, TENANTS + 1)]
    specs = [
        make_source(rng, tenants[n % TENANTS], n % TENANTS + 1, owners[n % TENANTS], n, today) for n in range(SOURCES)
    ]
    with_text = [spec for spec in specs if spec["status"] != Lifecycle.DELETED]
    counts = iter(passage_counts(rng, len(with_text), PASSAGES))
    sources, texts, document_frequency = [], [], Counter()
    for number, spec in enumerate(specs):
        topic = list(dict.fromkeys(vocabulary.common(rng) for _ in range(TOPIC_WORDS)))  # not a set: reproducible
        title_words = rng.sample(topic, min(len(topic), rng.randint(2, 4)))
        title = " ".join(title_words).capitalize() + f" ({number})"
        sections = []
        if spec["status"] != Lifecycle.DELETED:
            for _ in range(next(counts)):
                heading_words = [rng.choice(topic), *vocabulary.draw(rng, rng.randint(1, 3))]
                text, used = prose(rng, vocabulary, topic, rng.randint(40, 120))
                document_frequency.update(used | set(title_words) | set(heading_words))
                sections.append((" ".join(heading_words).capitalize(), text))
        body = "\n\n".join(f"## {heading}\n\n{text}" for heading, text in sections)
        passages = split_passages(title, body) if body else []
        assert len(passages) == len(sections), "a generated section must make exactly one passage"
        source = KnowledgeSource(title=title, body=body, **spec)
        source.scope_tokens = build_scope_tokens(source)
        sources.append(source)
        texts.append(passages)
    KnowledgeSource.objects.bulk_create(sources, batch_size=500)
    raw = connection.cursor().cursor  # psycopg cursor, for COPY; the trigger fills search_vector
    with raw.copy(
        "COPY knowledge_passage (source_id, tenant_id, position, heading, text, fingerprint) FROM STDIN"
    ) as copy:
        for source, passages in zip(sources, texts, strict=True):
            for position, (heading, text) in enumerate(passages, start=1):
                copy.write_row((source.pk, source.tenant_id, position, heading, text, fingerprint(text)))
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE knowledge_knowledgesource")
        cursor.execute("VACUUM ANALYZE knowledge_passage")
    return {source.pk: source for source in sources}, document_frequency


def describe(sources: dict[int, KnowledgeSource], document_frequency: Counter, today) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), pg_size_pretty(pg_total_relation_size('knowledge_passage')),"
            " pg_size_pretty(pg_relation_size('knowledge_passage_search')) FROM knowledge_passage"
        )
        passages, size, gin = cursor.fetchone()
    statuses = Counter(source.status for source in sources.values())
    approved = [source for source in sources.values() if source.status == Lifecycle.APPROVED]
    overdue = [source for source in approved if source.review_due_on < today]
    warn = sum(source.stale_policy == StalePolicy.WARN for source in overdue)
    visibility = Counter(source.visibility for source in sources.values())
    unscoped = sum(source.scope_tokens.count(":*|") == 5 for source in sources.values())
    print(
        f"  {passages:,} passages ({size} with indexes, full-text index {gin}) in {len(sources):,} sources,"
        f" {TENANTS} tenants"
    )
    print("  lifecycle: " + ", ".join(f"{status} {count:,}" for status, count in statuses.most_common()))
    print(
        f"  freshness: {len(overdue):,} of {len(approved):,} approved overdue for review"
        f" ({len(overdue) - warn:,} excluded, {warn:,} used with a warning)"
    )
    print("  visibility: " + ", ".join(f"{name} {count:,}" for name, count in visibility.most_common()))
    print(f"  scope: {unscoped:,} unscoped, {len(sources) - unscoped:,} scoped on 1-5 dimensions")
    ranked = sorted(document_frequency.items(), key=lambda item: (-item[1], item[0]))
    print(
        f"  words: {len(ranked):,} in use; passages holding the 1st, 10th, 100th, 1,000th most common: "
        + ", ".join(
            f"{ranked[n - 1][0]} {ranked[n - 1][1] / passages:.1%}" for n in (1, 10, 100, 1000) if n <= len(ranked)
        )
    )


# --- Questions -----------------------------------------------------------------------------------


def make_question(rng: random.Random, vocabulary: Vocabulary) -> tuple[str, str]:
    """A question of 4-10 words and its kind: mostly common words, some with rare ones,
    a few only rare words, a few only words no passage holds."""
    kind = rng.choices(["common", "mixed", "rare", "unknown"], weights=[60, 27, 8, 5])[0]
    starter = rng.choice(STARTERS).split()
    length = rng.randint(4, 10)
    content_words = max(2, length - len(starter))
    pick = {
        "common": lambda: vocabulary.common(rng),
        "mixed": lambda: vocabulary.rare(rng) if rng.random() < 0.4 else vocabulary.common(rng),
        "rare": lambda: vocabulary.rare(rng),
        "unknown": lambda: rng.choice(vocabulary.unknown),
    }[kind]
    words = [*starter, *(pick() for _ in range(content_words))]
    return " ".join(words).capitalize() + "?", kind


def make_context(rng: random.Random, tenants: list[Tenant]) -> RetrievalContext:
    tenant_index = rng.randrange(TENANTS)
    audience = Audience.CUSTOMER if rng.random() < 0.6 else Audience.INTERNAL
    roles = frozenset()
    if audience == Audience.INTERNAL:
        roles = frozenset(rng.choices(list(ROLE_WEIGHTS), weights=list(ROLE_WEIGHTS.values()), k=rng.randint(1, 2)))

    def maybe(values: tuple[str, ...], share: float) -> str:
        return rng.choice(values) if rng.random() < share else ""

    return RetrievalContext(
        tenant_id=tenants[tenant_index].pk,
        audience=audience,
        roles=roles,
        region=maybe(REGIONS, 0.85),
        segment=maybe(SEGMENTS, 0.7),
        channel=maybe(CHANNELS, 0.9),
        product=maybe(PRODUCTS, 0.5),
        brand=maybe(brands_of(tenant_index + 1), 0.4),
    )


# --- The two paths ---------------------------------------------------------------------------------


def ungoverned(query: str, k: int = K) -> tuple[str, list[dict]]:
    """What ``retrieve`` does with every governance condition taken out: the same redaction,
    words, tsquery, ranking, order, k and columns, over all passages of all tenants."""
    question = prepare_question(query)
    if not question.terms:
        return RetrievalStatus.WEAK, []
    rows = list(ranked_rows(Passage.objects.all(), question.words, search_backend(), k))
    if not rows:
        return RetrievalStatus.GAP, rows
    return match_status(max(coverage(question.terms, f"{row['heading']} {row['text']}") for row in rows)), rows


def governed(query: str, context: RetrievalContext, k: int = K):
    return retrieve(query, context, k, record_gap=False)


def same_shape(query: str, context: RetrievalContext) -> bool:
    """Both paths send the same SELECT list, ranking, order and LIMIT: only WHERE differs."""
    with CaptureQueriesContext(connection) as captured:
        governed(query, context)
    governed_sql = captured.captured_queries[0]["sql"]
    with CaptureQueriesContext(connection) as captured:
        ungoverned(query)
    ungoverned_sql = captured.captured_queries[0]["sql"]

    def select_list(sql: str) -> str:
        return sql[: sql.index(" FROM ")]

    def tail(sql: str) -> str:
        return sql[sql.rindex(" ORDER BY ") :]

    return select_list(governed_sql) == select_list(ungoverned_sql) and tail(governed_sql) == tail(ungoverned_sql)


# --- Rules, recomputed in Python ---------------------------------------------------------------------


def breaks_rules(source: KnowledgeSource, context: RetrievalContext, today) -> str:
    """Why ``source`` must not be retrieved in ``context`` (empty if it may), from the
    generated fields, independently of the SQL."""
    if source.tenant_id != context.tenant_id:
        return "tenant"
    if source.status != Lifecycle.APPROVED:
        return "status"
    if not (
        (source.review_due_on is not None and source.review_due_on >= today) or source.stale_policy == StalePolicy.WARN
    ):
        return "freshness"
    if context.audience == Audience.CUSTOMER:
        visible = source.visibility == Visibility.PUBLIC
    else:
        visible = source.visibility in (Visibility.PUBLIC, Visibility.INTERNAL) or (
            source.visibility == Visibility.RESTRICTED and bool(context.roles & set(source.restricted_roles))
        )
    if not visible:
        return "visibility"
    for field, dimension in (
        ("brands", "brand"),
        ("regions", "region"),
        ("products", "product"),
        ("segments", "segment"),
        ("channels", "channel"),
    ):
        values = getattr(source, field)
        if values and context.scope_value(dimension) not in values:
            return f"scope:{dimension}"
    return ""


def check_rules(sample, sources: dict[int, KnowledgeSource], today) -> None:
    """No leak: every passage returned comes from a source in ``eligible_sources`` and
    obeys every rule as recomputed in Python. Nothing held back: the passages returned are
    the top k of ranking exactly the sources the Python rules allow."""
    broken: Counter = Counter()
    returned = outside_eligible = same_top = 0
    for query, context in sample:
        eligible = set(eligible_sources(context, today).values_list("pk", flat=True))
        result = governed(query, context)
        for passage in result.passages:
            returned += 1
            outside_eligible += passage.source_id not in eligible
            reason = breaks_rules(sources[passage.source_id], context, today)
            if reason:
                broken[reason] += 1
        allowed = [pk for pk, source in sources.items() if not breaks_rules(source, context, today)]
        expected = ranked_rows(
            Passage.objects.filter(source_id__in=allowed), prepare_question(query).words, search_backend(), K
        )
        expected_ids = [row["pk"] for row in expected]
        same_top += expected_ids == [passage.passage_id for passage in result.passages]
    verdict = "OK" if not broken and not outside_eligible and same_top == len(sample) else "FAILED"
    print(
        f"  rules check on {len(sample)} questions: {returned:,} passages returned; outside eligible_sources:"
        f" {outside_eligible}; breaking a rule (tenant, approved, freshness, visibility, scope, recomputed in"
        f" Python): {sum(broken.values())}{f' {dict(broken)}' if broken else ''}; same top {K} as ranking only"
        f" the sources the Python rules allow: {same_top}/{len(sample)} -> {verdict}"
    )
    if verdict != "OK":
        raise SystemExit("governed retrieval returned a passage it must not, or held back one it should return")


# --- Measuring ----------------------------------------------------------------------------------------


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def summary(samples: list[float]) -> str:
    return (
        f"p50 {statistics.median(samples):6.2f} ms  p95 {percentile(samples, 0.95):6.2f} ms"
        f"  p99 {percentile(samples, 0.99):6.2f} ms  mean {statistics.mean(samples):6.2f} ms"
        f"  max {max(samples):6.2f} ms"
    )


def explain(query: str, context: RetrievalContext) -> None:
    with CaptureQueriesContext(connection) as captured:
        governed(query, context)
    sql = captured.captured_queries[0]["sql"]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        print("\n".join("    " + row[0] for row in cursor.fetchall()))


class CpuClock:
    """CPU time of this process and of its PostgreSQL backend together (time.process_time
    and Linux /proc/<pid>/schedstat; a local server only). On a shared machine wall time
    also holds the waits for a CPU; CPU time does not."""

    def __init__(self):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        self.backend = Path(f"/proc/{backend}/schedstat")
        self.available = self.backend.exists()

    def read(self) -> float:
        """Seconds so far. The backend is idle between queries, so its figure is current."""
        if not self.available:
            return 0.0
        return time.process_time() + int(self.backend.read_text().split()[0]) / 1e9


def run(questions, contexts) -> None:
    rng = random.Random(SEED + 1)
    paired = set(range(0, len(questions), BASELINE_EVERY))
    baseline = "every question" if BASELINE_EVERY == 1 else f"every {BASELINE_EVERY}th question ({len(paired):,})"
    print(
        f"\n{len(questions):,} questions, k={K}: governed all, ungoverned {baseline}, alternating in random order"
        f" after a warm-up of {WARM_UP}; load average before {os.getloadavg()[0]:.2f}"
    )
    for index, ((query, _kind), context) in enumerate(itertools.islice(zip(questions, contexts, strict=True), WARM_UP)):
        governed(query, context)
        if index in paired:
            ungoverned(query)
    times: dict[str, dict[int, float]] = {"governed": {}, "ungoverned": {}}
    statuses: dict[str, Counter] = {"governed": Counter(), "ungoverned": Counter()}
    by_status: dict[str, list[float]] = {}
    slowest = (0.0, None)
    clock = CpuClock()
    on_cpu: list[float] = []
    for index, ((query, _kind), context) in enumerate(zip(questions, contexts, strict=True)):
        paths = ["governed", "ungoverned"] if index in paired else ["governed"]
        rng.shuffle(paths)  # neither path always runs on the cache the other just warmed
        for path in paths:
            cpu_before = clock.read()
            started = time.perf_counter()
            status = governed(query, context).status if path == "governed" else ungoverned(query)[0]
            elapsed = (time.perf_counter() - started) * 1000
            if path == "governed":
                on_cpu.append((clock.read() - cpu_before) * 1000)
            times[path][index] = elapsed
            statuses[path][status] += 1
            if path == "governed":
                by_status.setdefault(status, []).append(elapsed)
                slowest = max(slowest, (elapsed, (query, context)), key=lambda pair: pair[0])
    print(f"  (load average after {os.getloadavg()[0]:.2f})")
    governed_paired = [times["governed"][index] for index in sorted(paired)]
    ungoverned_paired = [times["ungoverned"][index] for index in sorted(paired)]
    rows = [("governed", list(times["governed"].values()), statuses["governed"])]
    rows.append(("ungoverned", ungoverned_paired, statuses["ungoverned"]))
    for label, samples, counts in rows:
        shown = ", ".join(f"{status} {counts[status]}" for status in ("matched", "weak", "gap"))
        print(f"  {label:<11} {summary(samples)}  ({len(samples):,} questions: {shown})")
    for status, samples in sorted(by_status.items()):
        print(f"    governed, {status:<8} {summary(samples)}  ({len(samples):,})")
    if BASELINE_EVERY > 1:
        print(f"  governed on the {len(paired):,} questions also run ungoverned: {summary(governed_paired)}")
    if clock.available:
        off_cpu = statistics.mean(times["governed"].values()) - statistics.mean(on_cpu)
        print(
            f"  governed, CPU time (this process + its PostgreSQL backend): p50 {statistics.median(on_cpu):.2f} ms"
            f"  p95 {percentile(on_cpu, 0.95):.2f} ms  mean {statistics.mean(on_cpu):.2f} ms"
            f" (so {off_cpu:.2f} ms of the mean wall time off a CPU: waiting for one, or for I/O)"
        )
    p95 = percentile(list(times["governed"].values()), 0.95)
    ratio = percentile(governed_paired, 0.95) / percentile(ungoverned_paired, 0.95)
    median_ratio = statistics.median(governed_paired) / statistics.median(ungoverned_paired)
    print(f"  p95 ratio governed/ungoverned (same questions): {ratio:.2f}  (p50 ratio {median_ratio:.2f})")
    print(f"  target governed p95 < 50 ms: {'met' if p95 < 50 else 'MISSED'} ({p95:.2f} ms)")
    print(f"  target governed p95 <= 1.5x ungoverned p95: {'met' if ratio <= 1.5 else 'MISSED'} ({ratio:.2f}x)")
    if os.environ.get("RETRIEVAL_BENCH_EXPLAIN"):
        query, context = slowest[1]
        print(f"\n  slowest governed question ({slowest[0]:.1f} ms): {query!r} in {context}")
        explain(query, context)


def main() -> None:
    setup_test_environment()
    # Its own database: never the dev database or the test suite's.
    connection.settings_dict["TEST"]["NAME"] = "bench_retrieval"
    database_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            version = cursor.fetchone()[0].split(",")[0]
        print(f"database: {version} ({database_name}), {os.cpu_count()} CPUs, search backend {search_backend()}")
        rng = random.Random(SEED)
        today = timezone.localdate()
        vocabulary = Vocabulary(rng)
        started = time.perf_counter()
        sources, document_frequency = load(rng, vocabulary, today)
        print(f"\nloaded in {time.perf_counter() - started:.0f} s (search vectors by the trigger, then VACUUM ANALYZE)")
        describe(sources, document_frequency, today)
        tenants = list(Tenant.objects.order_by("pk"))
        questions = [make_question(rng, vocabulary) for _ in range(QUERIES)]
        contexts = [make_context(rng, tenants) for _ in range(QUERIES)]
        kinds = Counter(kind for _query, kind in questions)
        print(
            f"  questions: {', '.join(f'{kind} {count}' for kind, count in kinds.most_common())};"
            f" e.g. {questions[0][0]!r}, {questions[1][0]!r}"
        )
        print(f"  same SELECT list, ranking, order and LIMIT on both paths: {same_shape(questions[0][0], contexts[0])}")
        run(questions, contexts)
        print()
        check_rules(
            [(query, context) for (query, _kind), context in zip(questions, contexts, strict=True)][:CHECKED_QUERIES],
            sources,
            today,
        )
    finally:
        connections.close_all()
        if os.environ.get("RETRIEVAL_BENCH_KEEP"):
            print(f"\nkept database {database_name}")
        else:
            connection.creation.destroy_test_db(database_name, verbosity=0)


if __name__ == "__main__":
    main()
