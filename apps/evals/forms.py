"""The /evals forms. They parse what people type; the rules (what a gate may be, what a case
must say, who may do what) are the services', whose errors land back on these fields."""

import json

from django import forms
from django.core.exceptions import ValidationError

from apps.runtime.choices import Decision

from .choices import Category, GateMetric

YES_NO = [("", "—"), ("yes", "Yes"), ("no", "No")]


def place_errors(form: forms.Form, error: ValidationError) -> None:
    """A service's ValidationError onto the form: each field's messages on that field, the
    rest (and fields the form does not show) as the form's own errors."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error.messages)
        return
    for name, messages in error.message_dict.items():
        form.add_error(name if name in form.fields else None, messages)


class GateForm(forms.Form):
    """An agent's gate into one mode. Prefixed by the mode: one form per gate on the page."""

    metric = forms.ChoiceField(choices=GateMetric.choices)
    threshold = forms.DecimalField(
        max_digits=5, decimal_places=4, help_text="0 to 1: a floor for agreement and acceptance, a ceiling for errors."
    )
    min_reviews = forms.IntegerField(label="Minimum reviewed turns", min_value=0)
    min_pass_rate = forms.DecimalField(
        label="Minimum evaluation pass rate", max_digits=5, decimal_places=4, help_text="0 to 1 (0.9 is 90%)."
    )
    reason = forms.CharField(
        label="Why", max_length=100, help_text="Kept with the gate's history and in the audit trail."
    )

    def changes(self) -> dict:
        return {name: self.cleaned_data[name] for name in ("metric", "threshold", "min_reviews", "min_pass_rate")}


class ModeForm(forms.Form):
    """Move an agent to another rollout mode: the next one up, or any one below."""

    rollout_mode = forms.ChoiceField()
    reason = forms.CharField(label="Why", required=False, max_length=500)

    def __init__(self, *args, modes: list[tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["rollout_mode"].choices = modes


def _split(raw: str) -> list[str]:
    return [item.strip() for item in raw.replace("\n", ",").split(",") if item.strip()]


def _lines(raw: str) -> list[str]:
    return [line.strip() for line in raw.splitlines() if line.strip()]


class CaseFromTurnForm(forms.Form):
    """An incident turn made into a regression case: the draft's fields, corrected.

    Lists of source ids and of tools are typed separated by commas; texts (which may hold
    commas) one per line."""

    suite = forms.ModelChoiceField(queryset=None, empty_label=None)
    name = forms.CharField(max_length=200)
    category = forms.ChoiceField(choices=Category.choices)
    expected_decision = forms.ChoiceField(
        choices=[("", "Any decision"), *Decision.choices],
        required=False,
        help_text="What the agent should have done (the draft is what it did).",
    )
    must_cite = forms.CharField(required=False, label="Must cite (source ids)", help_text="e.g. 12, 14")
    must_not_cite = forms.CharField(required=False, label="Must not cite (source ids)", help_text="e.g. 9")
    must_call = forms.CharField(required=False, label="Must ask for (tools)", help_text="e.g. order.lookup")
    must_not_call = forms.CharField(required=False, label="Must not ask for (tools)", help_text="e.g. refund.issue")
    must_execute = forms.CharField(required=False, label="The gateway must run (tools)")
    must_not_execute = forms.CharField(required=False, label="The gateway must not run without a person (tools)")
    must_include = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), label="The reply must contain (one per line)"
    )
    must_not_include = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), label="The reply must not contain (one per line)"
    )
    simulated_tool_results = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Simulated tool results (JSON)",
        help_text='What a tool answers when the gateway would run it: {"order.lookup": {"status": "failed", '
        '"message": "timed out"}}. Empty: none.',
    )

    ID_LISTS = ("must_cite", "must_not_cite")
    TOOL_LISTS = ("must_call", "must_not_call", "must_execute", "must_not_execute")
    TEXT_LISTS = ("must_include", "must_not_include")

    def __init__(self, *args, suites, known_sources=None, **kwargs):
        """``known_sources(ids)``: {id: title} of those ids that are sources of the turn's tenant."""
        super().__init__(*args, **kwargs)
        self.fields["suite"].queryset = suites
        self.known_sources = known_sources

    @classmethod
    def initial_from(cls, draft: dict) -> dict:
        """The draft (``services.case_draft_from_turn``) as the form's text fields."""
        initial = {key: draft.get(key, "") for key in ("name", "category", "expected_decision")}
        for name in (*cls.ID_LISTS, *cls.TOOL_LISTS):
            initial[name] = ", ".join(str(item) for item in draft.get(name, []))
        for name in cls.TEXT_LISTS:
            initial[name] = "\n".join(draft.get(name, []))
        results = draft.get("simulated_tool_results") or {}
        initial["simulated_tool_results"] = json.dumps(results, indent=2, ensure_ascii=False) if results else ""
        return initial

    def _clean_ids(self, name: str) -> list[int]:
        ids = []
        for item in _split(self.cleaned_data.get(name, "")):
            if not item.lstrip("#").isdigit():
                raise ValidationError(f"“{item}” is not a source id: give numbers separated by commas, e.g. 12, 14.")
            ids.append(int(item.lstrip("#")))
        return ids

    def clean_must_cite(self):
        return self._clean_ids("must_cite")

    def clean_must_not_cite(self):
        return self._clean_ids("must_not_cite")

    def _clean_tools(self, name: str) -> list[str]:
        tools = _split(self.cleaned_data.get(name, ""))
        spaced = [tool for tool in tools if " " in tool]
        if spaced:
            example = "e.g. order.lookup, refund.issue"
            raise ValidationError(f"“{spaced[0]}” is not a tool name: give tool names separated by commas, {example}.")
        return tools

    def clean_must_call(self):
        return self._clean_tools("must_call")

    def clean_must_not_call(self):
        return self._clean_tools("must_not_call")

    def clean_must_execute(self):
        return self._clean_tools("must_execute")

    def clean_must_not_execute(self):
        return self._clean_tools("must_not_execute")

    def clean_must_include(self):
        return _lines(self.cleaned_data.get("must_include", ""))

    def clean_must_not_include(self):
        return _lines(self.cleaned_data.get("must_not_include", ""))

    def clean(self):
        cleaned = super().clean()
        if self.known_sources is not None:
            given = {name: cleaned[name] for name in self.ID_LISTS if name in cleaned}
            known = self.known_sources([source for ids in given.values() for source in ids])
            for name, ids in given.items():
                unknown = [str(source) for source in ids if source not in known]
                if unknown:
                    self.add_error(name, f"No source {', '.join('#' + source for source in unknown)} in this tenant.")
        return cleaned

    def clean_simulated_tool_results(self):
        raw = (self.cleaned_data.get("simulated_tool_results") or "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValidationError(
                f"Not valid JSON (line {error.lineno}, column {error.colno}: {error.msg.lower()})."
            ) from None
        if not isinstance(value, dict):
            raise ValidationError('Give an object by tool name, e.g. {"order.lookup": {"status": "failed"}}.')
        return value

    def overrides(self) -> dict:
        """What ``services.create_case_from_turn`` lays over the draft."""
        data = self.cleaned_data
        return {
            name: data[name]
            for name in (
                "name",
                "category",
                "expected_decision",
                *self.ID_LISTS,
                *self.TOOL_LISTS,
                *self.TEXT_LISTS,
                "simulated_tool_results",
            )
        }


class ReviewForm(forms.Form):
    """A person's review of a real turn. Which of the three questions it asks depends on the
    mode the agent was in (``selectors.review_kind``), never on what the browser sends."""

    human_action = forms.ChoiceField(label="What you actually did", required=False)
    accepted = forms.ChoiceField(label="Did you take the agent's suggestion?", choices=YES_NO, required=False)
    correct = forms.ChoiceField(label="Was the agent right?", choices=YES_NO, required=False)
    note = forms.CharField(label="Note", required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, kind: str, action_choices: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.kind = kind
        self.fields["human_action"].choices = [("", "—"), *((action, action) for action in action_choices)]

    def review_fields(self) -> dict:
        """The arguments ``services.record_review`` takes for this kind (it says what is missing)."""
        data = self.cleaned_data
        answer = {"yes": True, "no": False}
        if self.kind == "shadow":
            return {"human_action": data.get("human_action", ""), "note": data.get("note", "")}
        if self.kind == "suggestion":
            return {"accepted": answer.get(data.get("accepted")), "note": data.get("note", "")}
        return {"correct": answer.get(data.get("correct")), "note": data.get("note", "")}
