"""Turning a document into passages, and text into search terms and fingerprints.

Pure functions with no database: the retrieval on both databases, the conflict check and
the admin's upload all share them, so the same words mean the same thing everywhere.
"""

import hashlib
import re
import unicodedata
from html.parser import HTMLParser

MAX_PASSAGE_CHARS = 1200
MIN_FINGERPRINT_CHARS = 40  # shorter passages ("Thanks!") are too common to signal a conflict
MAX_QUERY_TERMS = 12

_WORD = re.compile(r"[a-z0-9]+")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# "30", "1,000", "2.5": one number each, so "$1,000" and "$500" mask the same.
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# (suffix, shortest word it is stripped from): "policies" -> "polic", "shipping" -> "shipp".
_SUFFIXES = (("ies", 5), ("ing", 6), ("ed", 5), ("es", 5), ("y", 5), ("s", 4))

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers him his how i if in into is it its itself just me more most my no nor not now of off on
    once only or other our ours out over own same she should so some such than that the their theirs them
    then there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours hi hello hey please thanks thank want need get got
    know tell let like may might must us also""".split()  # noqa: SIM905 — a list of words reads as one
)


def fold(text: str) -> str:
    """Lower case without accents: the form both databases compare."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).lower()


def stem(word: str) -> str:
    """A crude suffix strip, so "refunds", "refunded" and "refund" share a stem. Matching is
    by substring, so a stem need only be a prefix of the forms it should find."""
    for suffix, shortest_word in _SUFFIXES:
        if len(word) >= shortest_word and word.endswith(suffix) and not (suffix == "s" and word.endswith("ss")):
            return word[: -len(suffix)]
    return word


def query_words(query: str) -> list[str]:
    """The searchable words of a question, in order, without stopwords or repeats. The
    PostgreSQL backend hands these to its own stemmer; a stemmed word would be stemmed twice."""
    words: list[str] = []
    for word in _WORD.findall(fold(query)):
        if word not in STOPWORDS and len(word) >= 2 and word not in words:
            words.append(word)
        if len(words) == MAX_QUERY_TERMS:
            break
    return words


def query_terms(query: str) -> list[str]:
    """The stems of the searchable words: what the lexical ranking and coverage look for."""
    return list(dict.fromkeys(stem(word) for word in query_words(query)))


def coverage(terms: list[str], text: str) -> float:
    """Share of ``terms`` found in ``text``: how well a passage answers the question."""
    if not terms:
        return 0.0
    folded = fold(text)
    return sum(1 for term in terms if term in folded) / len(terms)


def topic_of(terms: list[str]) -> str:
    """A stable key for "the same question asked again": its stems, sorted."""
    return " ".join(sorted(terms))[:200]


def fingerprint(text: str) -> str:
    """Identical for passages that differ only in case, punctuation, spacing or numbers,
    which is what two versions of one policy look like ("within 30 days" vs "14 days")."""
    words = _WORD.findall(_NUMBER.sub(" num ", fold(text)))
    normalized = " ".join(words)
    if len(normalized) < MIN_FINGERPRINT_CHARS:
        return ""
    return hashlib.sha1(normalized.encode()).hexdigest()  # noqa: S324 — a fingerprint, not a secret


def normalized_title(title: str) -> str:
    return " ".join(_WORD.findall(fold(title)))


# --- Documents into passages ------------------------------------------------------------------


class _HtmlToText(HTMLParser):
    BLOCKS = {"p", "div", "li", "tr", "br", "section", "article", "blockquote", "pre", "table", "ul", "ol"}
    HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
    SKIPPED = {"script", "style", "head", "template", "noscript"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIPPED:
            self.skip_depth += 1
        elif tag == "body":  # HTML may leave </head> out: the body is never inside what is skipped
            self.skip_depth = 0
        elif tag in self.HEADINGS:
            self.parts.append("\n\n" + "#" * self.HEADINGS[tag] + " ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n" if tag != "li" else "\n\n- ")

    def handle_endtag(self, tag):
        if tag in self.SKIPPED:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in self.HEADINGS or tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.skip_depth:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """Readable text from an HTML page: headings kept as Markdown headings, scripts dropped."""
    parser = _HtmlToText()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _split_long(paragraph: str) -> list[str]:
    if len(paragraph) <= MAX_PASSAGE_CHARS:
        return [paragraph]
    pieces, current = [], ""
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > MAX_PASSAGE_CHARS:  # one enormous "sentence": cut it
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:MAX_PASSAGE_CHARS])
            sentence = sentence[MAX_PASSAGE_CHARS:]
        if current and len(current) + 1 + len(sentence) > MAX_PASSAGE_CHARS:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return pieces


def split_passages(title: str, body: str) -> list[tuple[str, str]]:
    """``(heading, text)`` passages of a Markdown or plain-text body. Each heading names the
    source and its section, so a passage read alone still says where it comes from."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    paragraph: list[str] = []

    def end_paragraph():
        if paragraph:
            sections[-1][1].append(" ".join(paragraph))
            paragraph.clear()

    for line in body.replace("\r\n", "\n").split("\n"):
        heading = _HEADING.match(line)
        if heading:
            end_paragraph()
            sections.append((heading.group(2).strip(), []))
        elif line.strip():
            paragraph.append(line.strip())
        else:
            end_paragraph()
    end_paragraph()

    passages: list[tuple[str, str]] = []
    for section, paragraphs in sections:
        heading = f"{title} > {section}" if section else title
        current = ""
        for piece in (part for paragraph in paragraphs for part in _split_long(paragraph)):
            if current and len(current) + 2 + len(piece) > MAX_PASSAGE_CHARS:
                passages.append((heading, current))
                current = piece
            else:
                current = f"{current}\n\n{piece}" if current else piece
        if current:
            passages.append((heading, current))
    return passages
