from datetime import UTC, datetime, time, timedelta

from django import forms

from .events import EventType


class AuditFilterForm(forms.Form):
    """The search of the audit pages, the export and the reports share this filter."""

    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    tenant = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    event_type = forms.CharField(required=False, max_length=64)
    agent = forms.IntegerField(required=False, min_value=1, label="Agent id")
    actor = forms.CharField(required=False, max_length=150, help_text="Username")
    tool = forms.CharField(required=False, max_length=100)
    decision = forms.CharField(required=False, max_length=32)
    approver = forms.CharField(required=False, max_length=150, help_text="Username")
    turn = forms.CharField(required=False, max_length=64, label="Turn id")

    def __init__(self, *args, tenant_choices: dict[int, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        choices = sorted((tenant_choices or {}).items(), key=lambda item: item[1])
        self.fields["tenant"].choices = [("", "All tenants"), *choices]
        self.event_type_choices = EventType.choices

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("The start date is after the end date.")
        return cleaned

    def filters(self) -> dict:
        """The valid, non-empty filters as plain values (dates as ISO strings)."""
        return {
            name: value.isoformat() if hasattr(value, "isoformat") else value
            for name, value in self.cleaned_data.items()
            if value not in (None, "")
        }


def day_bounds(date_from: str | None, date_to: str | None) -> tuple[datetime | None, datetime | None]:
    """[start of date_from, start of the day after date_to) in UTC."""
    start = datetime.combine(datetime.fromisoformat(date_from).date(), time.min, UTC) if date_from else None
    end = (
        datetime.combine(datetime.fromisoformat(date_to).date(), time.min, UTC) + timedelta(days=1) if date_to else None
    )
    return start, end
