"""Guardrail policy documents: parse, validate (with the line of every problem), merge the
layers, and compile.

A policy is YAML. The shipped default (default_policy.yaml) is the base; an active global
policy, then an active tenant policy, then an active agent policy are laid over it, each
may be partial: mappings merge key by key, lists and values replace. The merged result must
be complete and valid. docs/guardrails.md documents every key.
"""

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.yaml")

ACTIONS = ("kill", "refuse", "flag", "allow")  # most severe first
INPUT_ACTIONS = ("kill", "refuse", "flag")
TOOL_ARGUMENT_ACTIONS = ("refuse", "allow")
PII_KINDS = ("card", "ssn", "iban", "email", "phone", "secret")
_RULE_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,99}$")


class PolicyError(ValueError):
    """An invalid policy document; ``line`` is 1-based (None when unknown)."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


# --- Parsing, with line numbers ------------------------------------------------------------


def _lines(node, path=()) -> dict[tuple, int]:
    """Line (1-based) of every key and list item, by path, from the YAML node tree."""
    found = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            found[child] = key_node.start_mark.line + 1
            found.update({sub: line for sub, line in _lines(value_node, child).items() if sub != child})
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.update(_lines(item, (*path, index)))
    return found


def parse(document: str) -> tuple[dict, dict[tuple, int]]:
    """The document as data and the line of each path. PolicyError on bad YAML."""
    if not document or not document.strip():
        raise PolicyError("the policy is empty")
    try:
        node = yaml.compose(document, Loader=yaml.SafeLoader)
        data = yaml.safe_load(document)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise PolicyError(
            f"not valid YAML: {error.problem or error.context}", mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as error:
        raise PolicyError(f"not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise PolicyError("the policy must be a mapping of sections (input, output, tools, rate_limits, lockout)", 1)
    return data, _lines(node)


# --- Validation -------------------------------------------------------------------------------


class _Checker:
    """Checks a (possibly partial) document against the schema; the first problem raises
    PolicyError with its line."""

    def __init__(self, lines: dict[tuple, int], complete: bool):
        self.lines = lines
        self.complete = complete

    def fail(self, path: tuple, message: str):
        where = ".".join(str(part) for part in path) or "the document"
        line = next((self.lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in self.lines), None)
        raise PolicyError(f"{where}: {message}", line)

    def mapping(self, value, path, keys: dict, required: tuple = ()):
        if not isinstance(value, dict):
            self.fail(path, "must be a mapping")
        for key in value:
            if key not in keys:
                self.fail((*path, key), f"unknown key; expected one of {', '.join(keys)}")
        if self.complete:
            for key in required:
                if key not in value:
                    self.fail(path, f"missing {key}")
        for key, check in keys.items():
            if key in value:
                check(value[key], (*path, key))

    def integer(self, minimum: int):
        def check(value, path):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                self.fail(path, f"must be a whole number of at least {minimum}")

        return check

    def choice(self, options):
        def check(value, path):
            if value not in options:
                self.fail(path, f"must be one of {', '.join(options)}, not {value!r}")

        return check

    def boolean(self, value, path):
        if not isinstance(value, bool):
            self.fail(path, "must be true or false")

    def document(self, data):
        self.mapping(
            data,
            (),
            {
                "version": self.integer(1),
                "input": self.input,
                "output": self.output,
                "tools": self.tools,
                "rate_limits": self.rate_limits,
                "lockout": self.lockout,
            },
            required=("input", "output", "tools", "rate_limits", "lockout"),
        )

    def input(self, value, path):
        self.mapping(
            value,
            path,
            {"max_chars": self.integer(1), "injection": self.injection, "pii": self.pii},
            required=("max_chars", "injection", "pii"),
        )

    def injection(self, value, path):
        self.mapping(value, path, {"rules": self.rules}, required=("rules",))

    def rules(self, value, path):
        if not isinstance(value, list):
            self.fail(path, "must be a list of rules (id, pattern, action)")
        seen = set()
        for index, rule in enumerate(value):
            where = (*path, index)
            self.mapping(
                rule,
                where,
                {"id": self.rule_id, "pattern": self.pattern, "action": self.choice(INPUT_ACTIONS)},
                required=("id", "pattern", "action"),
            )
            if not self.complete and not {"id", "pattern", "action"} <= set(rule):
                self.fail(where, "a rule needs id, pattern and action")
            if rule["id"] in seen:
                self.fail((*where, "id"), f"duplicate rule id {rule['id']!r}")
            seen.add(rule["id"])

    def rule_id(self, value, path):
        if not isinstance(value, str) or not _RULE_ID.match(value):
            self.fail(path, "must be a snake_case name (letters, digits, underscores)")

    def pattern(self, value, path):
        if not isinstance(value, str) or not value:
            self.fail(path, "must be a non-empty regular expression")
        try:
            re.compile(value)
        except re.error as error:
            self.fail(path, f"does not compile: {error}")

    def pii(self, value, path):
        self.mapping(value, path, {kind: self.choice(ACTIONS) for kind in PII_KINDS}, required=PII_KINDS)

    def output(self, value, path):
        self.mapping(
            value,
            path,
            {"redact": self.kinds, "tool_scope_check": self.boolean},
            required=("redact", "tool_scope_check"),
        )

    def tools(self, value, path):
        self.mapping(
            value,
            path,
            {"arguments": self.tool_arguments, "allow_in_arguments": self.tool_kinds},
            required=("arguments", "allow_in_arguments"),
        )

    def tool_arguments(self, value, path):
        actions = {kind: self.choice(TOOL_ARGUMENT_ACTIONS) for kind in PII_KINDS}
        self.mapping(value, path, actions, required=PII_KINDS)

    def tool_kinds(self, value, path):
        if not isinstance(value, dict):
            self.fail(path, "must map tool names to lists of kinds, e.g. payout.create: [iban]")
        for tool, kinds in value.items():
            self.tool_name(tool, (*path, tool))
            self.kinds(kinds, (*path, tool))

    def tool_name(self, value, path):
        if not isinstance(value, str) or not _TOOL_NAME.match(value):
            self.fail(path, "is not a tool name such as refund.issue")

    def kinds(self, value, path):
        if not isinstance(value, list):
            self.fail(path, f"must be a list of kinds from {', '.join(PII_KINDS)}")
        for index, kind in enumerate(value):
            self.choice(PII_KINDS)(kind, (*path, index))

    def rate_limits(self, value, path):
        self.mapping(
            value,
            path,
            {"per_user_per_minute": self.integer(0), "per_tool_per_user_per_day": self.tool_limits},
            required=("per_user_per_minute", "per_tool_per_user_per_day"),
        )

    def tool_limits(self, value, path):
        if not isinstance(value, dict):
            self.fail(path, "must map tool names (or default) to daily limits")
        for tool, limit in value.items():
            if tool != "default":
                self.tool_name(tool, (*path, tool))
            self.integer(0)(limit, (*path, tool))
        if self.complete and "default" not in value:
            self.fail(path, "missing default")

    def lockout(self, value, path):
        self.mapping(
            value,
            path,
            {"kills": self.integer(1), "window_minutes": self.integer(1), "lockout_minutes": self.integer(1)},
            required=("kills", "window_minutes", "lockout_minutes"),
        )


def validate(document: str, *, complete: bool = False) -> dict:
    """Parse and check a policy document (an override may be partial); returns its data.
    Raises PolicyError naming the line and the reason."""
    data, lines = parse(document)
    _Checker(lines, complete).document(data)
    return data


# --- Layers -------------------------------------------------------------------------------------


def merge(base: dict, override: dict) -> dict:
    """``override`` laid over ``base``: mappings merge key by key; anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


@lru_cache(maxsize=1)
def default_document() -> str:
    return DEFAULT_POLICY_PATH.read_text()


@dataclass(frozen=True)
class CompiledPolicy:
    """A merged, validated policy, ready for the checks."""

    data: dict
    injection_rules: tuple
    layers: tuple[str, ...]  # which documents made it, e.g. ("default", "global v3", "tenant 2 v1")

    @property
    def max_chars(self) -> int:
        return self.data["input"]["max_chars"]

    @property
    def pii_actions(self) -> dict[str, str]:
        return self.data["input"]["pii"]

    @property
    def output_redact(self) -> tuple[str, ...]:
        return tuple(self.data["output"]["redact"])

    def refused_in_arguments(self, tool_name: str) -> frozenset[str]:
        """The kinds of personal data ``tool_name``'s arguments may not carry."""
        tools = self.data["tools"]
        allowed = set(tools["allow_in_arguments"].get(tool_name, ()))
        return frozenset(kind for kind, action in tools["arguments"].items() if action == "refuse") - allowed

    @property
    def lockout(self) -> dict:
        return self.data["lockout"]

    @property
    def rate_limits(self) -> dict:
        return self.data["rate_limits"]


@lru_cache(maxsize=256)
def compile_layers(layers: tuple[tuple[str, str], ...]) -> CompiledPolicy:
    """Merge (label, document) layers over the shipped default and compile the result.
    Cached by content: policy documents are immutable, so the same layers always compile
    to the same policy."""
    from .detectors import compile_rules

    data = validate(default_document(), complete=True)
    for _label, document in layers:
        data = merge(data, validate(document))
    _Checker({}, complete=True).document(data)
    rules = tuple(compile_rules(data["input"]["injection"]["rules"]))
    return CompiledPolicy(data=data, injection_rules=rules, layers=("default", *(label for label, _ in layers)))
