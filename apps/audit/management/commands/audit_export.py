from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.audit.exports import FORMATS, manifest_bytes
from apps.audit.forms import AuditFilterForm
from apps.audit.models import AuditEvent
from apps.audit.selectors import filter_events
from apps.audit.services import prepare_export


class Command(BaseCommand):
    help = (
        "Export audit events (all, or a filter) as CSV or JSONL with a signed manifest written "
        "next to it as <output>.manifest.json. Streams: memory stays flat."
    )

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=FORMATS, default="csv")
        parser.add_argument("--output", required=True, help="Path of the data file to write.")
        parser.add_argument("--as-user", help="Username recorded as the exporter (default: the command line).")
        for name in ("date-from", "date-to", "tenant", "event-type", "agent", "actor", "tool", "decision", "approver"):
            parser.add_argument(f"--{name}")

    def handle(self, *args, **options):
        raw = {
            name: options[name]
            for name in (
                "date_from",
                "date_to",
                "tenant",
                "event_type",
                "agent",
                "actor",
                "tool",
                "decision",
                "approver",
            )
            if options.get(name)
        }
        tenant = raw.get("tenant")
        form = AuditFilterForm(raw, tenant_choices={int(tenant): tenant} if tenant and tenant.isdigit() else {})
        if not form.is_valid():
            problems = "; ".join(
                f"{field}: {' '.join(errors)}" if field != "__all__" else " ".join(errors)
                for field, errors in form.errors.items()
            )
            raise CommandError(f"Bad filter: {problems}")
        user = None
        if options.get("as_user"):
            user = get_user_model().objects.filter(username=options["as_user"]).first()
            if user is None:
                raise CommandError(f"No user named {options['as_user']!r}.")
        output = Path(options["output"])
        if not output.parent.exists():
            raise CommandError(f"Directory {output.parent} does not exist.")
        filters = form.filters()
        export = prepare_export(
            user=user, queryset=filter_events(AuditEvent.objects.all(), filters), filters=filters, fmt=options["format"]
        )
        partial = output.with_name(output.name + ".partial")
        with open(partial, "wb") as handle:
            for chunk in export.chunks:
                handle.write(chunk)
        manifest = export.manifest()
        partial.replace(output)
        output.with_name(output.name + ".manifest.json").write_bytes(manifest_bytes(manifest))
        self.stdout.write(
            self.style.SUCCESS(
                f"Exported {manifest['row_count']} events to {output} (manifest: {output.name}.manifest.json)."
            )
        )
