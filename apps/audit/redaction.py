"""Secrets and PII never reach the audit trail: arguments and payloads are redacted at
write time, before they are hashed.

The built-in detectors cover what an audit row most often carries by accident (credential
fields, bearer tokens and API keys, card numbers that pass the Luhn check, US SSNs, IBANs,
e-mail addresses and phone numbers). A higher app with better detectors (guardrails)
replaces them at start-up with ``register_redactor`` — audit imports no other app.
"""

import re
from collections.abc import Callable

REDACTED = "[REDACTED]"

# Keys whose value is a credential whatever it looks like.
# Matched at the end of the key: "client_secret", "access_token", "X-Api-Key" are
# credentials; "input_tokens" and "max_tokens" (counts) and "session_started" are not.
_SECRET_KEY_NAMES = re.compile(
    r"(pass(word|wd|phrase)?|secrets?|token|api[_-]?key|access[_-]?key|authorization|credentials?|"
    r"private[_-]?key|cookie|session[_-]?(id|key|token)?|sessionid)$",
    re.IGNORECASE,
)

_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("secret", re.compile(r"\b(?:Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)),
    ("secret", re.compile(r"\b(?:sk|pk|rk|cpt|ghp|gho|xox[abprs])[-_][A-Za-z0-9_-]{16,}\b")),
    ("secret", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("secret", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b")),
    ("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")),
    ("ssn", re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")),
)
_CARD_CANDIDATE = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
# A phone number has a leading + or separators; a bare run of digits is more likely an
# order or ticket number and is left alone.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}|\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4})\b"
)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        number = int(char)
        if index % 2 == 1:
            number *= 2
            if number > 9:
                number -= 9
        total += number
    return total % 10 == 0


def redact_text(text: str, found: set[str]) -> str:
    for kind, pattern in _PATTERNS:
        text, count = pattern.subn(f"[{kind.upper()}]", text)
        if count:
            found.add(kind)

    def card(match: re.Match) -> str:
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            found.add("card")
            return "[CARD]"
        return match.group()

    text = _CARD_CANDIDATE.sub(card, text)

    def phone(match: re.Match) -> str:
        if len(re.sub(r"\D", "", match.group())) >= 10:
            found.add("phone")
            return "[PHONE]"
        return match.group()

    return _PHONE.sub(phone, text)


_LONGEST_PLAIN_NUMBER = 10**12  # a card number has at least 13 digits


def redact_structure(value, found: set[str], text_redactor: Callable[[str, set], str] = redact_text):
    """Redact ``value`` (any JSON-like structure): credential-named keys wholesale, every
    string through ``text_redactor``; add the kinds removed to ``found``."""
    if isinstance(value, str):
        return text_redactor(value, found)
    if isinstance(value, dict):
        cleaned = {}
        for key, item in value.items():
            if isinstance(key, str) and _SECRET_KEY_NAMES.search(key) and item not in (None, ""):
                found.add("secret")
                cleaned[key] = REDACTED
            else:
                cleaned[key] = redact_structure(item, found, text_redactor)
        return cleaned
    if isinstance(value, list | tuple):
        return [redact_structure(item, found, text_redactor) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _LONGEST_PLAIN_NUMBER:
        # A card number sent as a JSON number is still a card number.
        text = str(value)
        redacted = text_redactor(text, found)
        return value if redacted == text else redacted
    return value


def default_redactor(value, found: set[str]):
    return redact_structure(value, found)


Redactor = Callable[[object, set], object]
_active_redactor: Redactor = default_redactor


def register_redactor(redactor: Redactor) -> None:
    """Replace the redactor (called from a higher app's ``AppConfig.ready``)."""
    global _active_redactor
    _active_redactor = redactor


def redact(value) -> tuple[object, list[str]]:
    """``value`` with secrets and PII replaced, and the sorted kinds that were removed."""
    found: set[str] = set()
    cleaned = _active_redactor(value, found)
    return cleaned, sorted(found)
