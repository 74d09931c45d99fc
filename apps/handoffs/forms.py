from django import forms

from .choices import HandoffStatus, SlaState, TicketPriority
from .selectors import ALL_STATUSES, NO_QUEUE


class HandoffFilterForm(forms.Form):
    """The queue page's filter and the API's query parameters: one set of rules for both."""

    tenant = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    queue = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    status = forms.ChoiceField(
        required=False,
        choices=[("", "Waiting (open or claimed)"), *HandoffStatus.choices, (ALL_STATUSES, "All")],
    )
    priority = forms.ChoiceField(required=False, choices=[("", "Any priority"), *TicketPriority.choices])
    sla = forms.ChoiceField(
        required=False,
        label="SLA",
        choices=[("", "Any"), *((value, label) for value, label in SlaState.choices if value != SlaState.DONE)],
    )
    mine = forms.BooleanField(required=False, label="Claimed by me")

    def __init__(self, *args, tenant_choices=(), queue_choices=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].choices = [("", "All tenants"), *tenant_choices]
        self.fields["queue"].choices = [("", "All queues"), *queue_choices, (NO_QUEUE, "No queue")]

    def filters(self) -> dict:
        """The filters given (queue 0, "no queue", is one)."""
        return {
            name: value
            for name, value in self.cleaned_data.items()
            if value is not None and value is not False and value != ""
        }


class ResolveForm(forms.Form):
    """The rules (required, length) are the service's: its errors land on these fields."""

    resolution = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="How it was resolved",
    )


class ReturnForm(forms.Form):
    note = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Why the agent can take it back",
    )
