"""Admin actions that call a service once per selected row, and the "say why first" page some
of them show. Shared by every app's admin, so a refusal reads the same everywhere: each row
the service refuses gets its own error message, the rest one success message."""

from collections.abc import Callable, Iterable

from django import forms
from django.contrib import messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied, ValidationError
from django.template.response import TemplateResponse


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000)


def service_error_text(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(error.messages)
    return str(error)


def apply_to_each(request, rows: Iterable, operation: Callable, *, name: Callable, done: str) -> None:
    """Call ``operation(row)`` for each row; say "<done>: <names>." and one error per refusal."""
    succeeded, failed = [], []
    for row in rows:
        try:
            operation(row)
            succeeded.append(name(row))
        except (ValidationError, PermissionDenied) as error:
            failed.append(f"{name(row)}: {service_error_text(error)}")
    if succeeded:
        messages.success(request, f"{done}: {', '.join(succeeded)}.")
    for failure in failed:
        messages.error(request, failure)


def with_reason(request, model_admin, *, template: str, apply: Callable[[str], None], context: dict):
    """An action that asks why before it acts: the first POST shows ``template`` with a
    required reason; the POST carrying ``apply`` and a valid reason calls ``apply(reason)``
    and returns to the list. ``context`` adds what the template lists."""
    if "apply" in request.POST:
        form = ReasonForm(request.POST)
        if form.is_valid():
            apply(form.cleaned_data["reason"])
            return None
    else:
        form = ReasonForm()
    return TemplateResponse(
        request,
        template,
        {
            **model_admin.admin_site.each_context(request),
            "form": form,
            "action": request.POST.get("action"),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "opts": model_admin.model._meta,
            **context,
        },
    )
