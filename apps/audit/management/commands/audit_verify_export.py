from django.core.management.base import BaseCommand, CommandError

from apps.audit.exports import ExportInvalid, verify_export_file


class Command(BaseCommand):
    help = (
        "Check an audit export against its signed manifest. Needs the signing key "
        "(AUDIT_SIGNING_KEY), not the database."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("path", help="The export: a .zip from the audit pages, or a .csv/.jsonl data file.")
        parser.add_argument("--manifest", help="The manifest of a data file (default: <path>.manifest.json).")

    def handle(self, *args, path, manifest=None, **options):
        try:
            summary = verify_export_file(path, manifest)
        except ExportInvalid as error:
            raise CommandError(f"INVALID: {error}") from error
        self.stdout.write(self.style.SUCCESS(summary))
