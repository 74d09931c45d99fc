from django import forms

from .choices import RISK_TIERS, ApprovalStatus
from .selectors import QueueFilters


class QueueFilterForm(forms.Form):
    """The queue's filters; choices come from what the person may see."""

    status = forms.ChoiceField(
        choices=[(ApprovalStatus.PENDING, "Pending"), ("", "Any status"), *ApprovalStatus.choices[1:]],
        required=False,
        initial=ApprovalStatus.PENDING,
    )
    tenant = forms.ChoiceField(required=False)
    agent = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    tool = forms.ChoiceField(required=False)
    risk_tier = forms.ChoiceField(
        required=False, choices=[("", "Any tier"), *((tier, tier.title()) for tier in RISK_TIERS)]
    )
    overdue = forms.BooleanField(required=False, label="Overdue only")

    def __init__(self, data, *, choices: dict):
        # A query string without a status (empty, or only ?page=2) is the default view:
        # pending. "Any status" is an explicit empty status.
        if data and "status" not in data:
            data = data.copy()
            data["status"] = ApprovalStatus.PENDING
        super().__init__(data if data else None, initial={"status": ApprovalStatus.PENDING})
        self.fields["tenant"].choices = [("", "Any tenant"), *choices["tenants"]]
        self.fields["agent"].choices = [("", "Any agent"), *choices["agents"]]
        tools = choices["tools"]
        chosen = (data or {}).get("tool")
        if chosen and chosen not in tools:  # a tool with no pending request may still be filtered on
            tools = [*tools, chosen]
        self.fields["tool"].choices = [("", "Any tool"), *((name, name) for name in tools)]

    def filters(self) -> QueueFilters:
        """What to show: the default view (pending) unless a valid filter was sent."""
        if not self.is_bound or not self.is_valid():
            return QueueFilters()
        return QueueFilters(**self.cleaned_data)


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    comment = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required to reject: the agent and the customer are told why.",
    )
