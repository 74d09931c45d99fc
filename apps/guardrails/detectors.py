"""Detectors: prompt-injection rules over a normalized text, and PII and secrets with exact spans.

Pure Python and the standard library only (no Django, no database), so the benchmark and any
worker can import it directly. ``services.check_input`` and ``check_output`` call it.

Injection. ``normalize`` folds the tricks that keep a phrase from matching a plain regex:
compatibility forms (fullwidth, ligatures, mathematical letters), case, accents and other
combining marks, look-alike Cyrillic and Greek letters, leetspeak inside words, zero-width and
other invisible format characters (Unicode tag characters, used to smuggle text no one sees, are
turned back into the ASCII they hide), runs of whitespace, and words spelled out letter by
letter. Base64 blobs that decode to readable text, and the ROT13 reading of a message that names
ROT13, are appended so the rules see the payload too. The policy's rules
(``input.injection.rules``) are regexes over that normalized text.

Speed. Every message passes here before any model or tool cost, so a 2 KB message must take
well under a millisecond (bench/guardrails.py). A regex search costs time at every position of
the text, and 30 rules times 2,000 positions is too slow in Python. So ``compile_rules`` reads
each pattern with the standard library's own regex parser and finds the literal strings one of
which every match starts with ("ignore", "disregard", ...); one scan of the text finds where any
rule's strings occur, and a rule's regex is only tried at those places (``match`` at a position
gives the same result as ``search`` finding a match there). A rule whose start cannot be read
(it begins with a character class, say) is searched in full, after a test that a string every
match contains is present. Either way the result is exactly what ``regex.search`` would say.
The PII patterns start with a literal or a narrow character class for the same reason, and a
message without digits skips the digit-based detectors.

PII. Each kind is a regex for the candidate and a check that a regex cannot express: card numbers
pass the Luhn check and have an issuer's prefix and length (so order, tracking, IMEI and invoice
numbers are left alone), SSN areas, groups and serials are valid, IBANs have their country's
length and pass the ISO 7064 mod-97 check, North American numbers have valid area and exchange
codes. Spans are exact in the original text, and overlapping candidates are resolved in favour
of the longer (then the more specific) one, so ``redact`` replaces each value once.

Why not Microsoft Presidio. Checked on presidio-analyzer 2.2.366 (``pip download
presidio-analyzer --no-deps``, its METADATA and source read, not installed): it requires spaCy,
numpy, phonenumbers, pydantic, regex and tldextract, and its default NLP engine
(conf/default.yaml) is spaCy's ``en_core_web_lg``, which ``SpacyNlpEngine.load`` downloads with
``spacy.cli.download`` when it is not installed: a download at run time from outside the package
registries, which this project must never do. Its recognizers for the kinds we need are regexes
much like these plus context words (``CreditCardRecognizer`` is a digit pattern with a Luhn
check; ``UsSsnRecognizer`` scores a bare 9-digit run at 0.05 and relies on context words to lift
it), with phone numbers from the phonenumbers library. It has no prompt-injection detection, its
scored results would still need thresholds to tune, and it would bring a language model and
hundreds of megabytes for no gain on these kinds. These detectors are small, tested against the
labelled corpus in tests/data/guardrails/, and fast.
"""

# ruff: noqa: RUF001 — the look-alike table is made of look-alike letters on purpose.

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from re import _constants as _sre
from re import _parser as _sre_parser

PII_KINDS = ("card", "ssn", "iban", "email", "phone", "secret")
INJECTION_ACTIONS = ("kill", "refuse", "flag")


@dataclass(frozen=True)
class Finding:
    kind: str  # "injection" or one of PII_KINDS
    rule: str  # the rule or detector that fired, never the matched text
    start: int  # span in the original text; (0, 0) for an injection whose span is unknown
    end: int


@dataclass(frozen=True)
class CompiledRule:
    id: str
    action: str
    regex: re.Pattern
    # Literal strings one of which every match starts with, each with whether it must start a
    # word (the pattern has \b before it); None when the pattern's start cannot be read.
    prefixes: tuple[tuple[str, bool], ...] | None = None
    # Strings one of which every match contains: a rule searched in full is skipped when all
    # are absent. None: no such strings could be read.
    required: tuple[str, ...] | None = None


# --- Normalization ------------------------------------------------------------------------------

# Removed outright: zero-width characters, directional marks and embeddings, word joiner and
# invisible operators, byte order mark, soft hyphen, combining grapheme joiner, Mongolian vowel
# separator, Hangul fillers and the variation selectors.
_INVISIBLE = [0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x180E, 0x3164, 0xFEFF, 0xFFA0]
_INVISIBLE += [*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2070)]
_INVISIBLE += [*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0), 0xE0001, 0xE007F]
_INVISIBLE_TABLE: dict[int, str | None] = dict.fromkeys(_INVISIBLE)
# Unicode tag characters mirror ASCII and render as nothing: "ASCII smuggling" hides an
# instruction in them. Map them back to the ASCII they encode so the rules see it.
_INVISIBLE_TABLE.update({code: chr(code - 0xE0000) for code in range(0xE0020, 0xE007F)})


def _character_class(codes) -> str:
    """A regex class for the code points, written as ranges."""
    ranges: list[list[int]] = []
    for code in sorted(codes):
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    parts = (re.escape(chr(low)) + (f"-{re.escape(chr(high))}" if high > low else "") for low, high in ranges)
    return f"[{''.join(parts)}]"


# str.translate looks every character up in the table; finding the rare runs that need it with a
# regex and translating only those is many times faster on a 2 KB message.
_INVISIBLE_RUN = re.compile(_character_class(_INVISIBLE_TABLE) + "+")

# Letters that look like Latin ones (after case folding: the upper-case look-alikes, such as
# Cyrillic KA, EM, EN, TE, VE and Greek ETA, KAPPA, MU, TAU, fold to these lower-case forms first).
_HOMOGLYPHS = str.maketrans(
    {
        # Cyrillic
        "а": "a",
        "в": "b",
        "е": "e",
        "ё": "e",
        "з": "3",
        "і": "i",
        "ї": "i",
        "ј": "j",
        "к": "k",
        "м": "m",
        "н": "h",
        "о": "o",
        "р": "p",
        "с": "c",
        "т": "t",
        "у": "y",
        "х": "x",
        "ѕ": "s",
        "ԁ": "d",
        "ԛ": "q",
        "ԝ": "w",
        "һ": "h",
        "ӏ": "l",
        "ɡ": "g",
        "ı": "i",
        "ȷ": "j",
        # Greek
        "α": "a",
        "β": "b",
        "ε": "e",
        "η": "n",
        "ι": "i",
        "κ": "k",
        "μ": "u",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "χ": "x",
        "ω": "w",
        "ϲ": "c",
        "ϳ": "j",
        # Letter-like symbols NFKD leaves alone
        "ø": "o",
        "ł": "l",
        "đ": "d",
        "ħ": "h",
    }
)
_HOMOGLYPH_RUN = re.compile(_character_class(_HOMOGLYPHS) + "+")
_COMBINING_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")

# Leetspeak, applied only inside a word that also has letters ("1gn0r3", "pr0mpt", "$y$tem"),
# never to a number on its own ("order 1234") nor to a word ending in a number of two or more
# digits ("base64", "rot13", "win11"), which is how real names are written. The regex starts at
# the digit (a fast scan); the word's start is found from there.
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_LEET_RUN = re.compile(r"[0-9@$][\w@$]*")
_NAME_WITH_NUMBER = re.compile(r"[a-z]+\d{2,}")
_LETTER = re.compile(r"[a-z]")

# Three or more single letters or digits separated by one space or one punctuation mark
# ("i g n o r e", "i.g.n.o.r.e", "i-g-n-o-r-e", "i. g. n"): joined into one word. Two or more
# spaces end the word, so "i g n o r e  a l l" becomes "ignore all". Any such run has either a
# space followed by three single characters or a mark followed by two: the two hints start with
# a literal space or a rare character, fast scans that let most messages skip the rest.
_SPELLED_HINT_SPACE = re.compile(r" [^\W_](?:[ .\-_*+~|/\\,:;]\s?[^\W_]){2}(?![^\W_])")
_SPELLED_HINT_MARK = re.compile(r"[.\-_*+~|/\\,:;][^\W_][.\-_*+~|/\\,:;\s]\s?[^\W_](?![^\W_])")
_SPELLED_OUT = re.compile(r"(?<![^\W_])[^\W_](?:(?:[.\-_*+~|/\\,:;]\s?|\s)[^\W_](?![^\W_])){2,}")
# Two-letter words spelled out ("i s") are joined only between double spaces, the way a phrase
# spelled out letter by letter separates its words ("w h a t  i s  t h e").
_SPELLED_PAIR = re.compile(r"(?:(?<=\s\s)|^)[^\W_] [^\W_](?=\s\s|$)")
_NOT_ALNUM = re.compile(r"[\W_]+")

# Base64 blobs (standard or URL-safe alphabet) that decode to readable text are decoded and their
# text appended, so "decode this and do what it says: aWdub3Jl..." shows the rules the payload.
_BASE64_BLOB = re.compile(r"(?<![\w+/=-])[A-Za-z0-9+/_-]{16,}={0,2}(?![\w+/=-])")
_ROT13_NAMED = re.compile(r"\brot\W*13\b")


def _translate_invisible(match: re.Match) -> str:
    return match.group().translate(_INVISIBLE_TABLE)


def _translate_homoglyphs(match: re.Match) -> str:
    return match.group().translate(_HOMOGLYPHS)


def _rejoin(match: re.Match) -> str:
    return _NOT_ALNUM.sub("", match.group())


def _unleet(text: str) -> str:
    parts = []
    position = 0
    for match in _LEET_RUN.finditer(text):
        start, end = match.span()
        if start < position:  # inside a word already handled
            continue
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_@$"):
            start -= 1
        word = text[start:end]
        if _LETTER.search(word) and not _NAME_WITH_NUMBER.fullmatch(word):
            parts.append(text[position:start])
            parts.append(word.translate(_LEET))
            position = end
    if not parts:
        return text
    parts.append(text[position:])
    return "".join(parts)


def _fold(text: str) -> str:
    if text.isascii():
        folded = text.lower()
    else:
        folded = _INVISIBLE_RUN.sub(_translate_invisible, text)
        # NFKD rather than NFKC: the same compatibility folding, with accents and stacked
        # combining marks split off so they can be dropped ("ìgnöre" is "ignore").
        folded = unicodedata.normalize("NFKD", folded).casefold()
        folded = _HOMOGLYPH_RUN.sub(_translate_homoglyphs, _COMBINING_MARKS.sub("", folded))
    if _SPELLED_HINT_SPACE.search(" " + folded) or _SPELLED_HINT_MARK.search(folded):
        folded = _SPELLED_OUT.sub(_rejoin, folded)
        if "  " in folded:
            folded = _SPELLED_PAIR.sub(_rejoin, folded)
    folded = _unleet(folded)
    return " ".join(folded.split())


def _decoded_payloads(text: str) -> list[str]:
    payloads = []
    if len(text) < 16:
        return payloads
    tokens = text.split()
    if len(max(tokens, key=len, default="")) < 16:
        return payloads
    for token in tokens:
        if len(token) < 16:
            continue
        for match in _BASE64_BLOB.finditer(token):
            blob = match.group().rstrip("=")
            if len(blob) % 4 == 1 or blob.isdigit() or blob.islower() or blob.isupper():
                continue
            altchars = b"-_" if ("-" in blob or "_" in blob) else None
            try:
                decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), altchars=altchars, validate=True).decode()
            except (binascii.Error, ValueError):  # a UnicodeDecodeError is a ValueError
                continue
            readable = sum(char.isalpha() or char == " " for char in decoded)
            if decoded.isprintable() and readable >= 0.8 * len(decoded):
                payloads.append(decoded)
    return payloads


def normalize(text: str) -> str:
    """``text`` folded for injection matching (see the module docstring), with the readable
    text of any base64 payload, and the ROT13 reading of a message that names ROT13, appended
    after " | "."""
    folded = _fold(text)
    extra = [_fold(payload) for payload in _decoded_payloads(text)]
    if "rot" in folded and _ROT13_NAMED.search(folded):
        extra.append(codecs.encode(folded, "rot13"))
    return " | ".join([folded, *extra]) if extra else folded


# --- Injection rules ----------------------------------------------------------------------------


def compile_rules(rules: list[dict]) -> list[CompiledRule]:
    """The policy's ``input.injection.rules`` compiled; ValueError names the rule at fault."""
    compiled = []
    seen = set()
    for rule in rules:
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        if not isinstance(rule_id, str) or not rule_id:
            raise ValueError(f"rule {rule_id!r}: every rule needs an id")
        if rule_id in seen:
            raise ValueError(f"rule {rule_id}: duplicate id")
        seen.add(rule_id)
        action = rule.get("action")
        if action not in INJECTION_ACTIONS:
            raise ValueError(f"rule {rule_id}: action must be one of {', '.join(INJECTION_ACTIONS)}, not {action!r}")
        pattern = rule.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"rule {rule_id}: pattern must be a non-empty string")
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise ValueError(f"rule {rule_id}: {error}") from error
        prefixes, required = _analyse(pattern)
        compiled.append(CompiledRule(rule_id, action, regex, prefixes, required))
    return compiled


# --- Reading a pattern: the strings its matches start with or contain ---------------------------
# With the standard library's own parser (private, but unchanged in substance since Python 2).
# Anything it cannot read safely means "unknown", which costs time but never a detection.

_ZERO_WIDTH = (_sre.AT, _sre.ASSERT, _sre.ASSERT_NOT)
_REPEATS = (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT)
_WORD_BOUNDARIES = (_sre.AT_BOUNDARY, _sre.AT_UNI_BOUNDARY, _sre.AT_LOC_BOUNDARY)


@lru_cache(maxsize=1024)  # policies are compiled again and again from the same patterns
def _analyse(pattern: str) -> tuple[tuple[tuple[str, bool], ...] | None, tuple[str, ...] | None]:
    try:
        parsed = _sre_parser.parse(pattern)
    except Exception:  # it compiled; only the reading failed, so the rule runs in full
        return None, None
    if parsed.state.flags & re.IGNORECASE:
        return None, None
    items = list(parsed)
    prefixes = _prefixes(items, word_start=False)
    if prefixes:
        return tuple(sorted(prefixes)), None
    required = _required(items)
    if not required:
        return None, None
    # A string that contains a shorter one of the set adds nothing ("instructions", "instruction").
    kept = [string for string in required if not any(other != string and other in string for other in required)]
    return None, tuple(sorted(kept, key=len))


def _prefixes(items: list, word_start: bool) -> set[tuple[str, bool]] | None:
    """(string, must start a word) pairs, one of which every match of ``items`` starts with."""
    index = 0
    while index < len(items) and items[index][0] in _ZERO_WIDTH:
        op, argument = items[index]
        if op is _sre.AT and argument in _WORD_BOUNDARIES:
            word_start = True
        index += 1
    if index == len(items):
        return None
    op, argument = items[index]
    if op is _sre.LITERAL:
        run = []
        while index < len(items) and items[index][0] is _sre.LITERAL:
            run.append(chr(items[index][1]))
            index += 1
        string = "".join(run)
        return {(string, word_start and (string[0].isalnum() or string[0] == "_"))}
    if op is _sre.SUBPATTERN:
        if argument[1] & re.IGNORECASE:
            return None
        return _prefixes(list(argument[3]) + items[index + 1 :], word_start)
    if op is _sre.ATOMIC_GROUP:
        return _prefixes(list(argument) + items[index + 1 :], word_start)
    if op is _sre.BRANCH:
        found: set[tuple[str, bool]] = set()
        for branch in argument[1]:
            branch_prefixes = _prefixes(list(branch) + items[index + 1 :], word_start)
            if not branch_prefixes:
                return None
            found |= branch_prefixes
        return found
    if op in _REPEATS:
        low, _high, body = argument
        with_body = _prefixes(list(body), word_start)
        if low >= 1:
            return with_body
        without = _prefixes(items[index + 1 :], word_start)
        return with_body | without if with_body and without else None
    return None


def _required(items: list) -> frozenset[str] | None:
    """Strings one of which every match of ``items`` contains, the rarest such set found."""
    options: list[frozenset[str]] = []
    run: list[str] = []
    for op, argument in items:
        if op is _sre.LITERAL:
            run.append(chr(argument))
            continue
        if run:
            options.append(frozenset(["".join(run)]))
            run = []
        needed = None
        if op is _sre.SUBPATTERN and not argument[1] & re.IGNORECASE:
            needed = _required(list(argument[3]))
        elif op is _sre.ATOMIC_GROUP:
            needed = _required(list(argument))
        elif op in _REPEATS and argument[0] >= 1:
            needed = _required(list(argument[2]))
        elif op is _sre.BRANCH:
            branches = [_required(list(branch)) for branch in argument[1]]
            if all(branches):
                needed = frozenset().union(*branches)
        if needed:
            options.append(needed)
    if run:
        options.append(frozenset(["".join(run)]))
    return max(options, key=_rarity, default=None)


# Words nearly every support message has: a set holding one of them filters nothing.
_COMMON_WORDS = frozenset(
    (  # noqa: SIM905 — a word list reads best as words
        "a an and are as at be but by can do for from get give have help i if in is it list me my new not now of "
        "on or our please post read return send show tell thank thanks that the this to us user was what will with "
        "you your"
    ).split()
)


def _rarity(option: frozenset[str]) -> tuple:
    """Prefer sets without everyday words, then whose shortest string is longest, then small."""
    return (not option & _COMMON_WORDS, min(map(len, option)), -len(option))


@dataclass(frozen=True)
class _Triggers:
    """For one list of rules: a scan that finds every place a rule's match could start."""

    scan: re.Pattern | None  # finds each position where one of the strings starts (the longest)
    to_try: dict[str, tuple[tuple[int, bool], ...]]  # string found -> (rule index, must start a word)
    in_full: tuple[int, ...]  # rules whose start could not be read


def _trie_pattern(strings: list[str]) -> str:
    tree: dict = {}
    for string in strings:
        node = tree
        for char in string:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict) -> str:
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        group = branches[0] if len(branches) == 1 and len(branches[0]) == 1 else f"(?:{'|'.join(branches)})"
        return f"{group}?" if "" in node else group

    return build(tree)


@lru_cache(maxsize=64)
def _build_triggers(plan: tuple[tuple[tuple[str, bool], ...] | None, ...]) -> _Triggers:
    """``plan`` holds each rule's prefixes (None: run it in full), in the rules' order."""
    starts: dict[str, list[tuple[int, bool]]] = {}
    in_full = []
    for index, prefixes in enumerate(plan):
        if prefixes is None:
            in_full.append(index)
            continue
        for string, word_start in prefixes:
            starts.setdefault(string, []).append((index, word_start))
    # The scan reports the longest string at a position; every string that is a prefix of it
    # starts there too, so its rules are tried as well.
    to_try = {}
    for string in starts:
        candidates: dict[int, bool] = {}
        for other, entries in starts.items():
            if string.startswith(other):
                for index, word_start in entries:
                    candidates[index] = candidates.get(index, True) and word_start
        to_try[string] = tuple(sorted(candidates.items()))
    scan = re.compile(f"(?=({_trie_pattern(sorted(starts))}))") if starts else None
    return _Triggers(scan, to_try, tuple(in_full))


def find_injections(text: str, rules: list[CompiledRule], normalized: str | None = None) -> list[Finding]:
    """One finding per rule whose pattern matches the normalized text, in the rules' order.

    The span is the match's when normalizing kept the text's length (so offsets line up, as
    for ASCII text that only changed case or leetspeak); otherwise it is (0, 0).
    """
    if not rules:
        return []
    if normalized is None:
        normalized = normalize(text)
    # Built once per distinct list of rules (by their prefixes), however often it is compiled.
    triggers = _build_triggers(tuple(rule.prefixes for rule in rules))
    matches: dict[int, re.Match] = {}
    if triggers.scan is not None:
        for trigger in triggers.scan.finditer(normalized):
            position = trigger.start()
            after_word = position > 0 and (normalized[position - 1].isalnum() or normalized[position - 1] == "_")
            for index, word_start in triggers.to_try[trigger.group(1)]:
                if index in matches or (word_start and after_word):
                    continue
                match = rules[index].regex.match(normalized, position)
                if match:
                    matches[index] = match
    for index in triggers.in_full:
        rule = rules[index]
        if rule.required is not None and not any(string in normalized for string in rule.required):
            continue
        match = rule.regex.search(normalized)
        if match:
            matches[index] = match
    aligned = len(normalized) == len(text)
    findings = []
    for index in sorted(matches):
        start, end = matches[index].span() if aligned else (0, 0)
        findings.append(Finding("injection", rules[index].id, start, end))
    return findings


# --- PII ----------------------------------------------------------------------------------------
# Each pattern starts with a literal or a narrow class (a digit, "+", an upper-case letter), so
# the regex engine skips quickly to the places worth trying; boundary checks that would have to
# come first are written as look-behinds after the first character ("\d(?<![\w-]\d)" is
# "a digit not preceded by a word character or a dash").

# Card numbers: 13-19 digits, unseparated or in the groupings cards are printed with
# (4-4-4-4[-3], Amex 4-6-5, Diners 4-6-4), not touching other digit groups (so a window of a
# 22-digit tracking number is not a card).
_CARD = re.compile(
    r"\d(?<![\w-]\d)(?<!\d[ -]\d)"
    r"(?:\d{12,18}|\d{3}([ -])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{1,3})?|\d{3}([ -])\d{6}\2\d{4,5})"
    r"(?![\w-]|[ -]\d)"
)
_SSN = re.compile(r"\d(?<![\w-]\d)\d\d-\d\d-\d{4}(?![\w-])")
# Nine digits with no dashes (or with spaces) are an SSN only right after words that say so.
_SSN_CONTEXT = re.compile(
    r"\b(?:ssn|ss#|social\s+security(?:\s+(?:number|num|no|#))?)\b[^\d\n]{0,24}?(?<![\d-])"
    r"(\d{3}([ ]?)\d{2}\2\d{4})(?![\w-])",
    re.IGNORECASE,
)
# IBAN: an upper-case country code and check digits, then up to 30 letters or digits, spaces
# allowed; the candidate runs on into following words and is cut at the country's length.
_IBAN = re.compile(r"[A-Z][A-Z]\d\d(?: ?[A-Za-z0-9]){11,32}")
_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
# International numbers: "+" and country code, then groups; 8 to 15 digits in all (E.164).
_PHONE_INTERNATIONAL = re.compile(r"\+(?<![\w+]\+)\d{1,3}+(?:[ .-]?\(\d{1,4}\)|[ .-]?\d{1,5}+){1,6}(?!\w)")
# North American numbers: "(415) 555-0100", "415-555-0100", "415.555.0100", "415 555 0100",
# optionally after "1-" or "1 "; area code and exchange start with 2-9. Tried only where the
# hint (an exchange and line number) is present.
_PHONE_NANP_HINT = re.compile(r"\d[ .-]\d{4}(?![\w-])")
_PHONE_NANP = re.compile(
    r"(?<![\w+.-])(?:1[ .-])?(?:\([2-9]\d{2}\) ?[2-9]\d{2}[ .-]|[2-9]\d{2}([ .-])[2-9]\d{2}\1)\d{4}(?![\w-]|[.-]\d)"
)
# Secrets: (rule, literal every match starts with, pattern). The literal is tested first.
_SECRETS: tuple[tuple[str, str, re.Pattern], ...] = (
    # The whole block when it ends, else the header and the base64 lines that follow it.
    (
        "secret.private_key",
        "-----BEGIN ",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
            r"(?:[\s\S]{0,8000}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|(?:\s+[A-Za-z0-9+/=]{16,}+)*)"
        ),
    ),
    ("secret.bearer", "earer", re.compile(r"[Bb](?<![\w-][Bb])earer\s+(?=[A-Za-z._~+/=-]*\d)[A-Za-z0-9._~+/=-]{16,}")),
    ("secret.jwt", "eyJ", re.compile(r"eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{8,}")),
    ("secret.openai", "sk-", re.compile(r"sk-(?<![\w-]sk-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")),
    ("secret.stripe", "k_", re.compile(r"[sr]k_(?<![\w-][sr]k_)(?:live|test)_[A-Za-z0-9]{16,}")),
    ("secret.api_token", "cpt_", re.compile(r"cpt_(?<![\w-]cpt_)[A-Za-z0-9_-]{20,}")),
    ("secret.github", "gh", re.compile(r"gh[pousr]_(?<![\w-]gh[pousr]_)[A-Za-z0-9]{30,}")),
    ("secret.github", "github_pat_", re.compile(r"github_pat_(?<![\w-]github_pat_)[A-Za-z0-9_]{22,}")),
    ("secret.slack", "xox", re.compile(r"xox[abprs]-(?<![\w-]xox[abprs]-)[A-Za-z0-9-]{10,}")),
    ("secret.aws", "A", re.compile(r"A(?<![A-Za-z0-9]A)(?:KIA|SIA)[0-9A-Z]{16}(?![A-Za-z0-9])")),
    ("secret.google", "AIza", re.compile(r"AIza(?<![\w-]AIza)[0-9A-Za-z_-]{35}")),
)
_DIGIT = re.compile(r"\d")

# ISO 13616 IBAN length per country (SWIFT IBAN registry).
_IBAN_LENGTHS = {
    **dict.fromkeys(["NO"], 15),
    **dict.fromkeys(["BE"], 16),
    **dict.fromkeys(["DK", "FI", "FO", "GL", "NL"], 18),
    **dict.fromkeys(["MK", "SI"], 19),
    **dict.fromkeys(["AT", "BA", "EE", "KZ", "LT", "LU", "XK"], 20),
    **dict.fromkeys(["CH", "HR", "LI", "LV"], 21),
    **dict.fromkeys(["BG", "BH", "CR", "DE", "GB", "GE", "IE", "ME", "RS", "VA"], 22),
    **dict.fromkeys(["AE", "GI", "IL", "IQ", "TL"], 23),
    **dict.fromkeys(["AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"], 24),
    **dict.fromkeys(["PT", "ST"], 25),
    **dict.fromkeys(["IS", "TR"], 26),
    **dict.fromkeys(["FR", "GR", "IT", "MC", "MR", "SM"], 27),
    **dict.fromkeys(["AL", "AZ", "BY", "CY", "DO", "GT", "HU", "LB", "PL", "SV"], 28),
    **dict.fromkeys(["BR", "EG", "PS", "QA", "UA"], 29),
    **dict.fromkeys(["JO", "KW", "MU"], 30),
    **dict.fromkeys(["MT", "SC"], 31),
    **dict.fromkeys(["LC"], 32),
}

# On overlap the longer finding wins, then the more specific kind (lower number); a phone number,
# the weakest evidence, gives way to any other kind.
_SPECIFICITY = {"secret": 0, "iban": 1, "card": 2, "ssn": 3, "email": 4, "phone": 5}
_PLACEHOLDERS = {kind: f"[{kind.upper()}]" for kind in PII_KINDS}


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        number = ord(char) - 48
        if index % 2:
            number = number * 2 - 9 if number > 4 else number * 2
        total += number
    return total % 10 == 0


def _card_issuer(digits: str) -> bool:
    """Has the prefix and length of a card a network issues: Visa 4 (13, 16, 19 digits);
    Mastercard 51-55 and 2221-2720 (16); Amex 34, 37 (15); Diners 30, 36, 38, 39 (14-19);
    JCB 3528-3589 (16-19); Discover, UnionPay, Maestro 5 and 6 (16-19). A 15-digit IMEI
    starting 35 or a 16-digit order number starting 1, 7, 8 or 9 is not a card."""
    first, length = digits[0], len(digits)
    if first == "4":
        return length in (13, 16, 19)
    if first in "56":
        return length >= 16
    if first == "3":
        if digits[1] in "47":
            return length == 15
        if digits[1] in "0689":
            return length >= 14
        return "3528" <= digits[:4] <= "3589" and length >= 16
    if first == "2":
        return "2221" <= digits[:4] <= "2720" and length == 16
    return False


def _ssn_valid(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def iban_valid(compact: str) -> bool:
    """``compact`` (upper case, no spaces) has its country's length and passes ISO 7064 mod 97."""
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit() or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _cards(text: str, found: list) -> None:
    for match in _CARD.finditer(text):
        digits = match.group().replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and _card_issuer(digits) and luhn_valid(digits):
            found.append(("card", "card.luhn", match.start(), match.end()))


def _ssns(text: str, found: list) -> None:
    for match in _SSN.finditer(text):
        value = match.group()
        if _ssn_valid(value[:3], value[4:6], value[7:]):
            found.append(("ssn", "ssn.dashed", match.start(), match.end()))
    lowered = text.lower()
    if "ssn" in lowered or "ss#" in lowered or "social" in lowered:
        for match in _SSN_CONTEXT.finditer(text):
            digits = match.group(1).replace(" ", "")
            if _ssn_valid(digits[:3], digits[3:5], digits[5:]):
                found.append(("ssn", "ssn.context", match.start(1), match.end(1)))


def _ibans(text: str, found: list) -> None:
    position = 0
    while match := _IBAN.search(text, position):
        start = match.start()
        position = start + 1  # a rejected candidate must not swallow an IBAN that starts inside it
        if start and text[start - 1].isalnum():
            continue
        candidate = match.group()
        expected = _IBAN_LENGTHS.get(candidate[:2])
        if expected is None:
            continue
        length = _length_for_characters(candidate, expected)
        if length is None:
            continue
        end = start + length
        if end < len(text) and text[end].isalnum():
            continue
        if iban_valid(candidate[:length].replace(" ", "").upper()):
            found.append(("iban", "iban.mod97", start, end))
            position = end


def _length_for_characters(candidate: str, wanted: int) -> int | None:
    """How much of ``candidate`` holds ``wanted`` characters other than spaces."""
    count = 0
    for offset, char in enumerate(candidate):
        if char != " ":
            count += 1
            if count == wanted:
                return offset + 1
    return None


def _emails(text: str, found: list) -> None:
    # Only around each "@": a local part is at most 64 characters, a domain at most 255.
    position = 0
    while (at := text.find("@", position)) != -1:
        match = _EMAIL.search(text, max(0, at - 64), at + 256)
        if match and match.start() <= at < match.end():
            found.append(("email", "email", match.start(), match.end()))
            position = match.end()
        else:
            position = at + 1


def _phones(text: str, found: list) -> None:
    if "+" in text:
        for match in _PHONE_INTERNATIONAL.finditer(text):
            # The groups may run on into a following number ("+44 20 7946 0958 123-45-6789"):
            # every cut at the end of a group with 8 to 15 digits is a candidate, and the
            # overlap rules in find_pii keep the longest that collides with nothing else.
            value = match.group()
            digits = 0
            for offset, char in enumerate(value):
                if not char.isdigit():
                    continue
                digits += 1
                end = offset + 1
                if end < len(value) and value[end].isdigit():
                    continue
                if end < len(value) and value[end] == ")":
                    end += 1
                if 8 <= digits <= 15:
                    found.append(("phone", "phone.e164", match.start(), match.start() + end))
    if _PHONE_NANP_HINT.search(text):
        for match in _PHONE_NANP.finditer(text):
            found.append(("phone", "phone.nanp", match.start(), match.end()))


def _secrets(text: str, found: list) -> None:
    for rule, literal, regex in _SECRETS:
        if literal in text:
            for match in regex.finditer(text):
                found.append(("secret", rule, match.start(), match.end()))


def find_pii(text: str, kinds=PII_KINDS) -> list[Finding]:
    """PII and secrets of ``kinds`` in ``text``, in order, non-overlapping, with exact spans."""
    candidates: list[tuple[str, str, int, int]] = []
    if _DIGIT.search(text):
        if "card" in kinds:
            _cards(text, candidates)
        if "ssn" in kinds:
            _ssns(text, candidates)
        if "iban" in kinds:
            _ibans(text, candidates)
        if "phone" in kinds:
            _phones(text, candidates)
    if "email" in kinds and "@" in text:
        _emails(text, candidates)
    if "secret" in kinds:
        _secrets(text, candidates)
    if not candidates:
        return []
    candidates.sort(key=lambda item: (item[0] == "phone", item[2] - item[3], _SPECIFICITY[item[0]], item[2]))
    chosen: list[tuple[str, str, int, int]] = []
    for candidate in candidates:
        if all(candidate[3] <= kept[2] or candidate[2] >= kept[3] for kept in chosen):
            chosen.append(candidate)
    chosen.sort(key=lambda item: item[2])
    return [Finding(kind, rule, start, end) for kind, rule, start, end in chosen]


def redact(text: str, kinds=PII_KINDS) -> tuple[str, list[str]]:
    """``text`` with each finding of ``kinds`` replaced by its placeholder ("[CARD]", ...), and
    the sorted kinds that were replaced."""
    findings = find_pii(text, kinds)
    if not findings:
        return text, []
    parts = []
    position = 0
    for finding in findings:
        parts.append(text[position : finding.start])
        parts.append(_PLACEHOLDERS[finding.kind])
        position = finding.end
    parts.append(text[position:])
    return "".join(parts), sorted({finding.kind for finding in findings})
