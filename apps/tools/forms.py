"""The admin's forms for tools, connections and grants. They validate what a person typed;
saving is the services' job (apps/tools/admin.py calls them)."""

import json
from decimal import Decimal

from django import forms
from django.core.exceptions import FieldDoesNotExist, PermissionDenied, ValidationError
from django.forms.fields import InvalidJSONInput
from django.forms.forms import NON_FIELD_ERRORS

from apps.accounts.admin_actions import service_error_text
from apps.agents.choices import Channel

from . import services
from .connectors import builtin_names
from .models import Connection, Grant, Tool


class ServiceCheckedForm(forms.ModelForm):
    """A form whose saving goes through a service.

    The model's own validation runs here as in any ModelForm. What only the service knows
    (a permission in the tenant, a rule across rows, another person's change in between) is
    found when the admin saves; the admin then shows this form again for the same POST with
    ``service_refusal`` set, and the refusal appears on the fields it names.
    """

    service_refusal: ValidationError | PermissionDenied | None = None  # set per request by the admin

    def _post_clean(self):
        super()._post_clean()
        if self.service_refusal is not None:
            self._add_refusal(self.service_refusal)

    def _add_refusal(self, error: Exception) -> None:
        if not isinstance(error, ValidationError) or not hasattr(error, "error_dict"):
            self.add_error(None, service_error_text(error))
            return
        for name, errors in error.error_dict.items():
            messages = [message for item in errors for message in item.messages]
            if name in self.fields:
                self.add_error(name, messages)
            elif name == NON_FIELD_ERRORS:
                self.add_error(None, messages)
            else:
                self.add_error(None, [f"{self._label(name)}: {message}" for message in messages])

    def _label(self, name: str) -> str:
        try:
            return str(self._meta.model._meta.get_field(name).verbose_name).capitalize()
        except FieldDoesNotExist:
            return name.replace("_", " ").capitalize()


def _reason_field(help_text: str) -> forms.CharField:
    return forms.CharField(required=False, max_length=300, help_text=help_text)


class ConnectionForm(ServiceCheckedForm):
    # Write-only: never pre-filled, never rendered back, not even after a refused save.
    new_secret_value = forms.CharField(
        required=False,
        max_length=4000,
        label="New secret value",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password", "size": 60}),
        help_text="Type a new secret to store it encrypted; it replaces an environment variable. Leave empty to "
        "keep the current secret. It is never shown again, here or anywhere.",
    )
    base_url = forms.URLField(
        max_length=500,
        assume_scheme="https",
        label="Base URL",
        help_text=Connection._meta.get_field("base_url").help_text,
    )
    reason = _reason_field("Why this change (kept in the history and the audit trail).")

    class Meta:
        model = Connection
        fields = ["tenant", *services.CONNECTION_FIELDS]
        labels = {"secret_env_var": "Environment variable name"}
        error_messages = {"owner": {"required": "Every connection needs an owner: who rotates and revokes it."}}

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("new_secret_value") and cleaned.get("secret_env_var") and "secret_env_var" in self.changed_data:
            raise ValidationError(
                "Give either a new secret value or the name of an environment variable holding it, not both."
            )
        return cleaned


class IndentedJSONField(forms.JSONField):
    """JSON shown indented, so a schema can be read and edited in the textarea."""

    def prepare_value(self, value):
        if isinstance(value, InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)


def _builtin_choices() -> list[tuple[str, str]]:
    return [("", "—"), *((name, name) for name in builtin_names())]


class ToolForm(ServiceCheckedForm):
    builtin = forms.ChoiceField(
        choices=_builtin_choices, required=False, help_text="For built-in tools: which one runs."
    )
    reason = _reason_field(
        "Why this change (kept in the history and the audit trail). Required when taking the tool off an "
        "agent's allowlist."
    )

    class Meta:
        model = Tool
        fields = ["tenant", *services.TOOL_FIELDS]
        field_classes = {"argument_schema": IndentedJSONField}
        widgets = {
            "description": forms.Textarea(attrs={"rows": 3, "cols": 80}),
            "argument_schema": forms.Textarea(attrs={"rows": 14, "cols": 80, "style": "font-family: monospace"}),
        }


class GrantForm(ServiceCheckedForm):
    allowed_channels = forms.MultipleChoiceField(
        choices=Channel.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked means every channel.",
    )
    reason = _reason_field("Why this change (kept in the history and the audit trail).")

    class Meta:
        model = Grant
        fields = ["role", "tool", *services.GRANT_CONDITIONS, "note"]

    def clean_max_amount(self):
        # As stored (two decimals), so the audit trail's diff reads 100.00 -> 250.00, not 250.
        amount = self.cleaned_data.get("max_amount")
        return amount if amount is None else amount.quantize(Decimal("0.01"))

    def clean(self):
        cleaned = super().clean()
        tool = cleaned.get("tool")
        if tool is not None and self.instance.pk is None:
            # A grant belongs to its tool's tenant; setting it now lets the model's own
            # checks (the role is of the same tenant) speak on this form.
            self.instance.tenant_id = tool.tenant_id
        return cleaned
