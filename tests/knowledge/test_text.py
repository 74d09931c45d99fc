"""The pure text functions behind passages, search terms and conflict fingerprints."""

import pytest

from apps.knowledge.text import (
    MAX_PASSAGE_CHARS,
    MAX_QUERY_TERMS,
    MIN_FINGERPRINT_CHARS,
    coverage,
    fingerprint,
    fold,
    html_to_text,
    normalized_title,
    query_terms,
    query_words,
    split_passages,
    stem,
    topic_of,
)

# --- split_passages ----------------------------------------------------------------------------


def test_headings_name_the_source_and_the_section():
    body = (
        "Refunds are accepted within 30 days.\n\n"
        "# Damaged items\n\nTell us within 14 days.\n\n"
        "## Exceptions ##\n\nGift cards are final.\n"
    )
    assert split_passages("Refund policy", body) == [
        ("Refund policy", "Refunds are accepted within 30 days."),
        ("Refund policy > Damaged items", "Tell us within 14 days."),
        ("Refund policy > Exceptions", "Gift cards are final."),  # closing hashes are not part of the name
    ]


def test_lines_of_one_paragraph_are_joined_and_paragraphs_of_a_section_kept_together():
    body = "First line\nsecond line\n\nNext paragraph."
    assert split_passages("T", body) == [("T", "First line second line\n\nNext paragraph.")]


def test_things_that_are_not_headings_stay_text():
    body = "#hashtag is not a heading\n\n####### seven hashes neither\n\n    # indented four: code, not a heading"
    (passage,) = split_passages("T", body)
    assert passage[0] == "T"
    assert "#hashtag" in passage[1] and "####### seven" in passage[1] and "# indented four" in passage[1]


def test_no_empty_passages():
    assert split_passages("T", "") == []
    assert split_passages("T", "  \n\n \t \n") == []
    # A heading with nothing under it makes no passage of its own.
    assert split_passages("T", "# Empty\n\n## Also empty\n\n## Full\n\nText.") == [("T > Full", "Text.")]


def test_windows_line_endings():
    body = "Intro.\r\n\r\n# Section\r\nFirst line\r\nsecond line\r\n"
    assert split_passages("T", body) == [("T", "Intro."), ("T > Section", "First line second line")]


def test_a_long_paragraph_is_split_at_sentences_below_the_limit():
    sentences = [f"Sentence {i} explains one more rule about refunds and returns." for i in range(80)]
    passages = split_passages("T", " ".join(sentences))
    assert len(passages) > 1
    assert all(len(text) <= MAX_PASSAGE_CHARS for _heading, text in passages)
    # Cut between sentences, and nothing lost or repeated.
    assert all(text.endswith("returns.") for _heading, text in passages)
    assert " ".join(text for _heading, text in passages) == " ".join(sentences)


def test_one_enormous_sentence_is_cut_to_the_limit():
    passages = split_passages("T", "x" * (2 * MAX_PASSAGE_CHARS + 100))
    assert [len(text) for _heading, text in passages] == [MAX_PASSAGE_CHARS, MAX_PASSAGE_CHARS, 100]


def test_paragraphs_that_together_exceed_the_limit_become_separate_passages():
    first, second = "a" * 700, "b" * 700
    assert split_passages("T", f"{first}\n\n{second}") == [("T", first), ("T", second)]


# --- html_to_text ------------------------------------------------------------------------------


def test_html_scripts_and_styles_are_dropped_headings_kept_entities_decoded():
    html = (
        "<html><head><title>Page title</title><style>p { color: red }</style></head><body>"
        "<h1>Refunds &amp; returns</h1><p>Within&nbsp;30 days &lt;no exceptions&gt;.</p>"
        "<script>alert('secret')</script><noscript>Enable JS</noscript>"
        "<h3>Exceptions</h3><ul><li>Gift cards</li><li>Food</li></ul></body></html>"
    )
    text = html_to_text(html)
    assert text == (
        "# Refunds & returns\n\nWithin 30 days <no exceptions>.\n\n### Exceptions\n\n- Gift cards\n\n- Food"
    )
    for dropped in ("Page title", "color", "alert", "secret", "Enable JS"):
        assert dropped not in text


def test_html_headings_become_passage_sections():
    text = html_to_text("<p>Intro.</p><h2>Damaged items</h2><p>Tell us within 14 days.</p>")
    assert split_passages("Returns", text) == [
        ("Returns", "Intro."),
        ("Returns > Damaged items", "Tell us within 14 days."),
    ]


def test_html_with_an_unclosed_head_keeps_its_body():
    """HTML lets a page leave ``</head>`` out; the body must not be skipped with the head."""
    text = html_to_text("<html><head><title>T</title><body><p>Refunds within 30 days.</p></body></html>")
    assert text == "Refunds within 30 days."


def test_html_whitespace_is_collapsed():
    assert html_to_text("<p>  many\n\n   spaces\there </p>\n\n\n\n<p>next</p>") == "many spaces here\n\nnext"


# --- query words and terms ---------------------------------------------------------------------


def test_query_words_drop_stopwords_and_single_letters_and_fold_case_and_accents():
    assert query_words("Hello, can I RETURN my Café? café CAFE x 2") == ["return", "cafe"]


def test_query_words_keep_numbers_and_order():
    assert query_words("Order 12345 shipped to Zürich") == ["order", "12345", "shipped", "zurich"]


def test_query_words_stop_at_the_maximum():
    words = [f"word{letter}" for letter in "abcdefghijklmnopqrstuvwxyz"]
    assert query_words(" ".join(words)) == words[:MAX_QUERY_TERMS]
    # Repeats do not use up the allowance.
    assert len(query_words("refund " * 50 + " ".join(words))) == MAX_QUERY_TERMS


def test_query_without_searchable_words():
    assert query_words("?? !! the a I") == []
    assert query_terms("") == []


def test_query_terms_are_stems_without_repeats():
    assert query_terms("refunds refunded refund") == ["refund"]
    assert query_terms("Shipping policies for boxes") == ["shipp", "polic", "box"]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("policies", "polic"),
        ("policy", "polic"),
        ("shipping", "shipp"),
        ("refunded", "refund"),
        ("refunds", "refund"),
        ("boxes", "box"),
        ("days", "day"),
        ("class", "class"),  # "ss" is not a plural
        ("bus", "bus"),  # too short to strip
        ("ring", "ring"),  # too short for "-ing"
        ("red", "red"),  # too short for "-ed"
        ("refund", "refund"),
    ],
)
def test_stem(word, expected):
    assert stem(word) == expected


def test_fold():
    assert fold("Ça RÉSUMÉ naïve") == "ca resume naive"


# --- fingerprints, titles, coverage, topics ----------------------------------------------------


POLICY = "Refunds are accepted within 30 days of delivery for unused items."


def test_fingerprint_ignores_numbers_case_punctuation_and_spacing():
    assert fingerprint(POLICY)
    assert fingerprint(POLICY) == fingerprint("REFUNDS are accepted, within 14 days of delivery -- for unused items!")
    assert fingerprint(POLICY) == fingerprint(POLICY.replace("30", "365"))


def test_fingerprint_treats_a_number_with_separators_as_one_number():
    """ "$1,000" and "$500" are two versions of one threshold."""
    first = "Refunds over $1,000 need a team lead's approval before they are paid."
    assert fingerprint(first) == fingerprint(first.replace("1,000", "500"))
    assert fingerprint(first) == fingerprint(first.replace("$1,000", "#500"))


def test_fingerprint_differs_when_words_differ():
    assert fingerprint(POLICY) != fingerprint(POLICY.replace("unused", "used"))
    assert fingerprint(POLICY) != fingerprint(POLICY.replace("within", "after"))


def test_short_text_has_no_fingerprint():
    assert fingerprint("Thanks for reading.") == ""
    assert fingerprint("") == ""
    boundary = "a" * MIN_FINGERPRINT_CHARS
    assert fingerprint(boundary) != "" and fingerprint(boundary[:-1]) == ""


def test_normalized_title():
    assert normalized_title("  Refund-Policy (EU)! ") == "refund policy eu"
    assert normalized_title("Remboursement Équipe") == normalized_title("remboursement equipe")


def test_coverage_is_the_share_of_terms_found():
    assert coverage(["refund", "day"], "Refunds within 30 DAYS") == 1.0
    assert coverage(["refund", "crypto"], "Refunds within 30 days") == 0.5
    assert coverage(["cafe"], "Café opening hours") == 1.0
    assert coverage(["crypto"], "Refunds") == 0.0
    assert coverage([], "anything") == 0.0


def test_topic_is_the_sorted_terms():
    assert topic_of(["pay", "crypto"]) == topic_of(["crypto", "pay"]) == "crypto pay"
    assert len(topic_of(["x" * 150, "y" * 150])) == 200
