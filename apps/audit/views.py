"""The compliance pages under /audit/: search the trail, read one event or the story of one
turn, the reports, and the export download.

Who sees which tenants is decided once, in ``access`` (the policy accounts registers) and
``selectors.visible_events``; these views check that the person may use the pages at all,
validate the filter, and hand over to selectors and services.
"""

import json
from datetime import UTC, datetime

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST, require_safe

from . import access, exports, selectors, services
from .events import EventType
from .forms import AuditFilterForm


def _tenants_allowed(user, permission: str) -> set[int] | None:
    """The tenants where ``user`` holds ``permission`` (None: all); 403 if there are none."""
    allowed = access.tenant_ids(user, permission)
    if allowed is not None and not allowed:
        action = "export" if permission == access.EXPORT_PERMISSION else "read"
        raise PermissionDenied(f"You hold no role that lets you {action} the audit trail.")
    return allowed


def _filter_form(data, allowed: set[int] | None) -> AuditFilterForm:
    return AuditFilterForm(data, tenant_choices=selectors.tenant_choices(allowed))


def _before(value: str | None) -> int | None:
    """The keyset cursor ``?before=<seq>``; anything but a positive number means the newest page."""
    return int(value) if value and value.isdigit() and int(value) > 0 else None


@require_safe
@login_required
def events(request):
    allowed = _tenants_allowed(request.user, access.VIEW_PERMISSION)
    form = _filter_form(request.GET, allowed)
    before = _before(request.GET.get("before"))
    rows, older = [], None
    if form.is_valid():
        queryset = selectors.filter_events(selectors.visible_events(request.user), form.filters())
        rows, older = selectors.page_of_events(queryset, before=before)
    return render(
        request,
        "audit/events.html",
        {
            "form": form,
            "events": rows,
            "older": older,
            "paged": before is not None,
            "pending": selectors.pending_count(),
            "verification": selectors.last_verification(),
            "export_filters": form.filters() if form.is_valid() else None,
            "may_export": access.may(request.user, access.EXPORT_PERMISSION),
            "export_formats": exports.FORMATS,
            "known_event_types": EventType.values,
        },
    )


def _shown(value) -> str:
    """A body value as a person reads it: structures as indented JSON, nothing as a dash."""
    if value is None or value in ("", [], {}):
        return "—"
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return str(value)


def _field(label: str, value) -> tuple[str, str, bool]:
    """(label, text, whether the text needs a block of its own)."""
    text = _shown(value)
    return label, text, "\n" in text


@require_safe
@login_required
def event(request, seq: int):
    _tenants_allowed(request.user, access.VIEW_PERMISSION)
    found = get_object_or_404(selectors.visible_events(request.user), seq=seq)
    return render(
        request,
        "audit/event.html",
        {
            "event": found,
            "fields": [_field(key, value) for key, value in found.data.items()],
            "pretty_body": json.dumps(found.data, indent=2, sort_keys=True, ensure_ascii=False),
        },
    )


# What a turn's story shows of each event, in this order, when the event carries it.
_STORY_FIELDS = (
    ("guardrail_verdict", "Guardrail verdict"),
    ("sources", "Sources"),
    ("model", "Model"),
    ("prompt_version", "Prompt version"),
    ("cost", "Cost"),
    ("latency_ms", "Latency (ms)"),
    ("tool", "Tool"),
    ("arguments", "Arguments (redacted)"),
    ("decision", "Decision"),
    ("reason", "Reason"),
    ("approval_status", "Approval"),
    ("approver_name", "Approver"),
    ("outcome", "Outcome"),
)
# Payload keys that hold what the agent said: shown as text, not as a field.
_OUTPUT_KEYS = ("output", "output_text", "answer", "text")


def _story_step(data: dict) -> dict:
    details = [_field(label, data.get(key)) for key, label in _STORY_FIELDS if _shown(data.get(key)) != "—"]
    payload = data.get("payload") if isinstance(data.get("payload"), dict) else {}
    output = next((payload[key] for key in _OUTPUT_KEYS if isinstance(payload.get(key), str) and payload[key]), None)
    details += [
        _field(key.replace("_", " ").capitalize(), value)
        for key, value in sorted(payload.items())
        if not (key in _OUTPUT_KEYS and value == output) and _shown(value) != "—"
    ]
    if data.get("redacted"):
        details.append(_field("Redacted", ", ".join(data["redacted"])))
    return {"details": details, "output": output}


@require_safe
@login_required
def turn(request, turn_id: str):
    _tenants_allowed(request.user, access.VIEW_PERMISSION)
    story = selectors.turn_story(request.user, turn_id)
    if not story:
        raise Http404("No audit events of this turn that you may read.")
    return render(
        request,
        "audit/turn.html",
        {"turn_id": turn_id, "steps": [{"event": found, **_story_step(found.data)} for found in story]},
    )


def _bad_request(request, message: str, form: AuditFilterForm | None = None):
    return render(request, "audit/export_refused.html", {"message": message, "form": form}, status=400)


@require_POST
@login_required
def export(request):
    """Stream a zip of the filtered events the user may export, with its signed manifest."""
    allowed = _tenants_allowed(request.user, access.EXPORT_PERMISSION)
    named = request.POST.get("tenant", "")
    if allowed is not None and named.isdigit() and int(named) not in allowed:
        # The same answer whether or not the tenant exists: no enumeration through exports.
        raise PermissionDenied("You may not export that tenant's audit events.")
    fmt = request.POST.get("format", "")
    if fmt not in exports.FORMATS:
        return _bad_request(request, f"Unknown export format {fmt!r}: choose {' or '.join(exports.FORMATS)}.")
    form = _filter_form(request.POST, allowed)
    if not form.is_valid():
        return _bad_request(request, "The filter is not valid; nothing was exported.", form)
    filters = form.filters()
    queryset = selectors.filter_events(selectors.visible_events(request.user, access.EXPORT_PERMISSION), filters)
    prepared = services.prepare_export(
        user=request.user, queryset=queryset, filters=filters, fmt=fmt, tenant_ids=allowed
    )
    response = StreamingHttpResponse(
        exports.zip_stream(prepared.chunks, fmt, prepared.manifest), content_type="application/zip"
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-export-{stamp}.zip"'
    response["Cache-Control"] = "no-store"
    return response


REPORT_FILTERS = ("date_from", "date_to", "tenant")


@require_safe
@login_required
def reports(request):
    allowed = _tenants_allowed(request.user, access.VIEW_PERMISSION)
    form = _filter_form(request.GET, allowed)
    context = {"form": form, "offered_filters": REPORT_FILTERS}
    if form.is_valid():
        # Only the filters the page offers apply, so what the page shows is what was counted
        # (an event type filter, say, would silently empty three of the four reports).
        filters = {name: value for name, value in form.filters().items() if name in REPORT_FILTERS}
        queryset = selectors.filter_events(selectors.visible_events(request.user), filters)
        refunds, refund_total = selectors.refunds_report(queryset)
        for row in refunds:
            row["occurred_at"] = datetime.fromisoformat(row["occurred_at"])
        context |= {
            "refunds": refunds,
            "refund_total": refund_total,
            "escalations": selectors.escalations_report(queryset),
            "guardrail_kills": selectors.guardrail_kills_report(queryset),
            "approval_times": selectors.approval_times_report(queryset),
        }
    return render(request, "audit/reports.html", context)
