"""What knowledge owners do to sources: create, edit, approve, review, deprecate and delete,
plus the freshness sweep and the conflict check. Each operation checks the actor's role in
the source's tenant inside its own transaction, records a SourceEvent (who, when, why),
labels the history row and writes a ``config.changed`` audit event, so the admin, the CLI
and a worker all follow the same rules. Audit events name sources; they never carry text.
"""

import logging
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from apps.accounts.governance import record_change, require_tenant_permission, save_with_history
from apps.accounts.models import Tenant, User

from .choices import SCOPE_DIMENSIONS, ConflictKind, Lifecycle, SourceAction, StalePolicy, Visibility
from .models import ConflictHint, KnowledgeSource, Passage, SourceEvent
from .text import fingerprint, normalized_title, split_passages

logger = logging.getLogger(__name__)

SCOPE_FIELDS = tuple(field for field, _prefix, _label in SCOPE_DIMENSIONS)
# What decides which answers an agent may give from a source, and to whom. Changing any of
# these on an approved source takes it back to draft until someone approves it again.
GOVERNED_FIELDS = ("body", "visibility", "restricted_roles", *SCOPE_FIELDS)
EDITABLE_SOURCE_FIELDS = (
    "title",
    "kind",
    "owner",
    "body",
    "origin_url",
    "visibility",
    "restricted_roles",
    *SCOPE_FIELDS,
    "review_cadence_days",
    "stale_policy",
)
MAX_BODY_CHARS = 2_000_000


def _required_reason(reason: str, what: str) -> str:
    if not reason or not reason.strip():
        raise ValidationError({"reason": f"Say why the source is {what}: the reason is kept with its history."})
    return reason.strip()


def _locked(source: KnowledgeSource) -> KnowledgeSource:
    return KnowledgeSource.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=source.pk)


def _record(
    source: KnowledgeSource,
    *,
    by: User | None,
    action: str,
    from_status: str,
    reason: str,
    changes: dict | None = None,
) -> None:
    SourceEvent.objects.create(
        source=source,
        action=action,
        from_status=from_status,
        to_status=source.status,
        version=source.version,
        by=by,
        reason=reason,
    )
    payload = {
        "source": {"id": source.pk, "title": source.title, "version": source.version},
        "status": [from_status, source.status],
        "why": reason,
    }
    if changes:
        payload["changes"] = changes
    record_change(by=by, tenant=source.tenant, what=f"knowledge.{action}", payload=payload)


def _rebuild_passages(source: KnowledgeSource) -> None:
    """Replace the source's passages with its current text (the PostgreSQL trigger indexes them)."""
    source.passages.all().delete()
    Passage.objects.bulk_create(
        Passage(
            source=source,
            tenant_id=source.tenant_id,
            position=position,
            heading=heading[:500],
            text=text,
            fingerprint=fingerprint(text),
        )
        for position, (heading, text) in enumerate(split_passages(source.title, source.body), start=1)
    )


def _check_fields(fields: dict) -> None:
    unknown = set(fields) - set(EDITABLE_SOURCE_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown source fields: {', '.join(sorted(unknown))}.")
    body = fields.get("body")
    if body is not None and len(body) > MAX_BODY_CHARS:
        raise ValidationError({"body": f"The text is {len(body):,} characters; the limit is {MAX_BODY_CHARS:,}."})


def _change_summary(before: dict, after: dict) -> dict:
    """The diff as the audit trail keeps it: values for settings, only "changed" for text."""
    changes = {}
    for field, value in after.items():
        if before.get(field) == value:
            continue
        if field == "body":
            changes["body"] = "text changed"
        elif field == "owner":
            changes["owner"] = [before["owner"], value]
        else:
            changes[field] = [before.get(field), value]
    return changes


def _snapshot(source: KnowledgeSource, fields) -> dict:
    return {
        field: (source.owner.get_username() if source.owner_id else None)
        if field == "owner"
        else getattr(source, field)
        for field in fields
    }


# --- Writing sources --------------------------------------------------------------------------


@transaction.atomic
def create_source(*, by: User, tenant: Tenant, reason: str = "", **fields: Any) -> KnowledgeSource:
    """A new source starts as a draft: no agent sees it until someone approves it."""
    require_tenant_permission(
        by, tenant.pk, "knowledge.add_knowledgesource", f"You may not add knowledge sources in {tenant}."
    )
    _check_fields(fields)
    source = KnowledgeSource(tenant=tenant, created_by=by, **fields)
    source.full_clean()
    save_with_history(source, by=by, reason=reason or "Source created")
    _rebuild_passages(source)
    _record(source, by=by, action=SourceAction.CREATED, from_status="", reason=reason or "Source created")
    return source


@transaction.atomic
def update_source(*, source: KnowledgeSource, by: User, reason: str = "", **changes: Any) -> KnowledgeSource:
    """Edit a source. New text raises the version; changing what an agent may say or to whom
    (text, visibility, scope) takes an approved source back to draft for re-approval."""
    source = _locked(source)
    require_tenant_permission(
        by, source.tenant_id, "knowledge.change_knowledgesource", f"You may not edit knowledge in {source.tenant}."
    )
    if source.status == Lifecycle.DELETED:
        raise ValidationError("This source was deleted; only its tombstone remains.")
    _check_fields(changes)
    before = _snapshot(source, changes)
    for field, value in changes.items():
        setattr(source, field, value)
    source.full_clean()
    summary = _change_summary(before, _snapshot(source, changes))
    if not summary:
        return source
    from_status = source.status
    if "body" in summary:
        source.version += 1
    governed = sorted(set(summary) & set(GOVERNED_FIELDS))
    if governed and source.status == Lifecycle.APPROVED:
        source.status = Lifecycle.DRAFT
        source.approved_by, source.approved_at = None, None
    why = reason or "Source edited"
    save_with_history(source, by=by, reason=why)
    if "body" in summary or "title" in summary:
        _rebuild_passages(source)
    action = SourceAction.RETURNED_TO_DRAFT if source.status != from_status else SourceAction.EDITED
    if action == SourceAction.RETURNED_TO_DRAFT:
        why = f"{why} (changed {', '.join(governed)}: needs approval again)"
    _record(source, by=by, action=action, from_status=from_status, reason=why, changes=summary)
    if action == SourceAction.RETURNED_TO_DRAFT:
        # Out of retrieval, so no longer in conflict; approving it again checks afresh (and
        # reopens a hint that still applies, telling both owners again).
        _resolve_conflicts_of(source, by=by, note=f"“{source.title}” returned to draft")
    if "title" in summary and source.status == Lifecycle.APPROVED:
        flag_conflicts(source)  # still approved under a new name, which may be another source's
    return source


@transaction.atomic
def approve_source(*, source: KnowledgeSource, by: User, reason: str = "") -> KnowledgeSource:
    """Draft (or deprecated, to reinstate) -> approved. Approval counts as a review, so the
    review clock starts again. Returns the source; conflicts it reveals are flagged."""
    source = _locked(source)
    require_tenant_permission(
        by,
        source.tenant_id,
        "knowledge.approve_knowledgesource",
        f"Approving knowledge in {source.tenant} needs the knowledge owner or administrator role.",
    )
    if source.status not in (Lifecycle.DRAFT, Lifecycle.DEPRECATED):
        raise ValidationError(f"“{source.title}” is {source.get_status_display().lower()}; only drafts are approved.")
    source.full_clean()  # the owner may have left the tenant since the draft was written
    from_status = source.status
    now = timezone.now()
    source.status = Lifecycle.APPROVED
    source.approved_by, source.approved_at = by, now
    source.last_reviewed_on = timezone.localdate()
    source.stale_since = None
    why = reason or "Approved"
    save_with_history(source, by=by, reason=why)
    _record(source, by=by, action=SourceAction.APPROVED, from_status=from_status, reason=why)
    flag_conflicts(source)
    return source


@transaction.atomic
def mark_reviewed(*, source: KnowledgeSource, by: User, note: str = "") -> KnowledgeSource:
    """The owner confirms the source is still true: the review clock starts again."""
    source = _locked(source)
    require_tenant_permission(
        by, source.tenant_id, "knowledge.change_knowledgesource", f"You may not review knowledge in {source.tenant}."
    )
    if source.status != Lifecycle.APPROVED:
        raise ValidationError(
            f"“{source.title}” is {source.get_status_display().lower()}; only approved sources are reviewed."
        )
    source.last_reviewed_on = timezone.localdate()
    source.stale_since = None
    why = note or "Reviewed: still accurate"
    save_with_history(source, by=by, reason=why)
    _record(source, by=by, action=SourceAction.REVIEWED, from_status=source.status, reason=why)
    return source


@transaction.atomic
def deprecate_source(*, source: KnowledgeSource, by: User, reason: str) -> KnowledgeSource:
    """Take a source out of retrieval, keeping its text for the record."""
    source = _locked(source)
    require_tenant_permission(
        by, source.tenant_id, "knowledge.change_knowledgesource", f"You may not deprecate knowledge in {source.tenant}."
    )
    why = _required_reason(reason, "deprecated")
    if source.status not in (Lifecycle.DRAFT, Lifecycle.APPROVED):
        raise ValidationError(f"“{source.title}” is already {source.get_status_display().lower()}.")
    from_status = source.status
    source.status = Lifecycle.DEPRECATED
    save_with_history(source, by=by, reason=why)
    _record(source, by=by, action=SourceAction.DEPRECATED, from_status=from_status, reason=why)
    _resolve_conflicts_of(source, by=by, note=f"“{source.title}” was deprecated")
    return source


@transaction.atomic
def purge_source(*, source: KnowledgeSource, by: User, reason: str) -> KnowledgeSource:
    """Delete a source: its text, passages (and so their search index entries), conflict
    hints and the text in its history rows go now, in one transaction. The row stays as a
    tombstone: id, title, owner, who deleted it, when and why."""
    source = _locked(source)
    require_tenant_permission(
        by, source.tenant_id, "knowledge.purge_knowledgesource", f"You may not delete knowledge in {source.tenant}."
    )
    why = _required_reason(reason, "deleted")
    if source.status == Lifecycle.DELETED:
        raise ValidationError(f"“{source.title}” was already deleted.")
    from_status = source.status
    source.passages.all().delete()
    ConflictHint.objects.filter(source=source).delete()
    ConflictHint.objects.filter(other_source=source).delete()
    source.status = Lifecycle.DELETED
    source.body = ""
    source.deleted_by, source.deleted_at, source.deletion_reason = by, timezone.now(), why
    save_with_history(source, by=by, reason=why)
    # simple-history copied the text into every earlier history row: purge it there too.
    KnowledgeSource.history.filter(id=source.pk).update(body="")
    _record(source, by=by, action=SourceAction.DELETED, from_status=from_status, reason=why)
    return source


# --- Freshness ------------------------------------------------------------------------------


def overdue_sources(today):
    """Approved sources past their review date that the sweep has not flagged yet."""
    return KnowledgeSource.objects.filter(
        status=Lifecycle.APPROVED, review_due_on__lt=today, stale_since__isnull=True
    ).select_related("tenant", "owner")


def sweep_freshness(*, today=None) -> dict:
    """Mark overdue sources stale and e-mail each owner the list of theirs.

    One transaction per owner, with the mail sent inside it: if the mail fails, that
    owner's sources stay unflagged and the next sweep tries again. Sources are excluded
    from retrieval by date the moment they fall due, whether or not the sweep has run.
    """
    today = today or timezone.localdate()
    by_owner: dict[int, list[int]] = defaultdict(list)
    for source_id, owner_id in overdue_sources(today).values_list("pk", "owner_id"):
        by_owner[owner_id].append(source_id)
    summary = {"marked_stale": 0, "owners_notified": 0, "owners_without_email": 0, "failed": 0}
    for owner_id, source_ids in by_owner.items():
        try:
            with transaction.atomic():
                sources = list(
                    overdue_sources(today).select_for_update(of=("self",)).filter(pk__in=source_ids, owner_id=owner_id)
                )
                for source in sources:
                    source.stale_since = timezone.now()
                    save_with_history(source, by=None, reason=f"Review overdue since {source.review_due_on}")
                    _record(
                        source,
                        by=None,
                        action=SourceAction.MARKED_STALE,
                        from_status=source.status,
                        reason=f"Review was due on {source.review_due_on}",
                    )
                if sources:
                    notified = _tell_owner_about_stale(sources[0].owner, sources)
                    summary["owners_notified" if notified else "owners_without_email"] += 1
                summary["marked_stale"] += len(sources)
        except Exception:  # one owner's mail server trouble must not stop the rest
            logger.exception("Freshness sweep failed for owner %s; will retry on the next sweep", owner_id)
            summary["failed"] += 1
    return summary


def _admin_link(source: KnowledgeSource) -> str:
    return settings.CONTROLPLANE_BASE_URL + reverse("admin:knowledge_knowledgesource_change", args=[source.pk])


def _tell_owner_about_stale(owner: User, sources: list[KnowledgeSource]) -> bool:
    if not owner.email:
        logger.warning("Owner %s has no e-mail address; %d stale sources not mailed", owner, len(sources))
        return False
    lines = []
    for source in sources:
        effect = (
            "agents no longer use it"
            if source.stale_policy == StalePolicy.EXCLUDE
            else "agents still use it, with a stale warning in every trace"
        )
        lines.append(
            f"- {source.title} ({source.tenant.name}): review was due {source.review_due_on}; {effect}.\n"
            f"  {_admin_link(source)}"
        )
    count = len(sources)
    send_mail(
        subject=f"{count} knowledge source{'s' if count != 1 else ''} overdue for review",
        message=(
            f"Hello {owner.display_name or owner.get_username()},\n\n"
            f"These sources you own are past their review date:\n\n" + "\n".join(lines) + "\n\n"
            "Open each one, check it is still true, and press “Mark reviewed” at the top of its page\n"
            "(or edit or deprecate it).\n"
        ),
        from_email=None,
        recipient_list=[owner.email],
    )
    return True


# --- Conflicts -------------------------------------------------------------------------------


def scopes_overlap(first: KnowledgeSource, second: KnowledgeSource) -> bool:
    """Some subject could be served by both: on every dimension one is unscoped or they share a value."""
    for field in SCOPE_FIELDS:
        mine, theirs = set(getattr(first, field)), set(getattr(second, field))
        if mine and theirs and not mine & theirs:
            return False
    return True


def flag_conflicts(source: KnowledgeSource) -> list[ConflictHint]:
    """Flag approved sources of the same tenant, in overlapping scope, that share this
    one's title or a passage identical but for numbers, case and punctuation (two
    versions of one policy). Both owners are told. Paraphrases are not caught."""
    if source.status != Lifecycle.APPROVED or source.visibility == Visibility.HUMAN_ONLY:
        return []
    candidates = (
        KnowledgeSource.objects.filter(tenant_id=source.tenant_id, status=Lifecycle.APPROVED)
        .exclude(pk=source.pk)
        .exclude(visibility=Visibility.HUMAN_ONLY)
    )
    title = normalized_title(source.title)
    fingerprints: dict[str, int] = {}
    for position, value in source.passages.exclude(fingerprint="").values_list("position", "fingerprint"):
        fingerprints.setdefault(value, position)
    found: list[tuple[KnowledgeSource, str, str]] = []
    for other in candidates.filter(title_key=title).select_related("owner"):
        if scopes_overlap(source, other):
            found.append((other, ConflictKind.SAME_TITLE, f"Both are titled “{source.title}”."))
    shared = (
        Passage.objects.filter(tenant_id=source.tenant_id, fingerprint__in=list(fingerprints), source__in=candidates)
        .values_list("source_id", "position", "fingerprint")
        .order_by("source_id", "position")
    )
    first_shared: dict[int, tuple[int, str]] = {}
    for other_id, other_position, value in shared:
        first_shared.setdefault(other_id, (other_position, value))
    others = KnowledgeSource.objects.select_related("owner").in_bulk(list(first_shared))
    for other_id, (other_position, value) in first_shared.items():
        other = others[other_id]
        if scopes_overlap(source, other):
            found.append(
                (
                    other,
                    ConflictKind.NEAR_IDENTICAL_PASSAGE,
                    f"Passage {fingerprints[value]} of “{source.title}” and passage {other_position} of "
                    f"“{other.title}” are identical apart from numbers or punctuation.",
                )
            )
    hints = []
    for other, kind, detail in found:
        first, second = sorted((source, other), key=lambda row: row.pk)
        hint, created = ConflictHint.objects.get_or_create(
            source=first, other_source=second, kind=kind, defaults={"tenant_id": source.tenant_id, "detail": detail}
        )
        if not created and hint.resolved_at is not None:  # flagged again after being resolved
            hint.resolved_at, hint.resolved_by, hint.resolution, hint.detail = None, None, "", detail
            hint.save()
        elif not created:
            continue
        hints.append(hint)
        transaction.on_commit(lambda hint_id=hint.pk: _tell_owners_about_conflict(hint_id))
    return hints


def _tell_owners_about_conflict(hint_id: int) -> None:
    hint = ConflictHint.objects.select_related("source__owner", "other_source__owner").filter(pk=hint_id).first()
    if hint is None:
        return
    recipients = sorted({owner.email for owner in (hint.source.owner, hint.other_source.owner) if owner.email})
    if not recipients:
        return
    try:
        send_mail(
            subject=f"Possible conflict: “{hint.source.title}” and “{hint.other_source.title}”",
            message=(
                f"{hint.detail}\n\nAgents may quote either to the same customers. Decide which is right, then "
                f"edit or deprecate the other, and resolve the hint.\n\n"
                f"{_admin_link(hint.source)}\n{_admin_link(hint.other_source)}\n"
            ),
            from_email=None,
            recipient_list=recipients,
        )
    except Exception:  # the hint is recorded and listed in the admin either way
        logger.exception("Could not e-mail the owners about conflict hint %s", hint_id)


@transaction.atomic
def resolve_conflict(*, hint: ConflictHint, by: User, note: str) -> ConflictHint:
    note = (note or "").strip()
    if not note:
        raise ValidationError({"resolution": "Say how the conflict was settled."})
    hint = ConflictHint.objects.select_for_update().select_related("tenant", "source", "other_source").get(pk=hint.pk)
    require_tenant_permission(
        by, hint.tenant_id, "knowledge.change_knowledgesource", "You may not resolve conflicts in this tenant."
    )
    if hint.resolved_at is None:
        hint.resolved_at, hint.resolved_by, hint.resolution = timezone.now(), by, note[:300]
        hint.save()
        record_change(
            by=by,
            tenant=hint.tenant,
            what="knowledge.conflict_resolved",
            payload={
                "sources": [
                    {"id": hint.source_id, "title": hint.source.title},
                    {"id": hint.other_source_id, "title": hint.other_source.title},
                ],
                "kind": hint.kind,
                "why": hint.resolution,
            },
        )
    return hint


def _resolve_conflicts_of(source: KnowledgeSource, *, by: User | None, note: str) -> None:
    ConflictHint.objects.open().filter(Q(source=source) | Q(other_source=source)).update(
        resolved_at=timezone.now(), resolved_by=by, resolution=note[:300]
    )
