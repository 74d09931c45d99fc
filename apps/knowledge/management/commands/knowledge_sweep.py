"""Run the freshness sweep now (beat runs it every KNOWLEDGE_SWEEP_MINUTES)."""

import datetime

from django.core.management.base import BaseCommand, CommandError

from apps.knowledge import services


class Command(BaseCommand):
    help = "Mark approved sources past their review date stale and e-mail each owner the list of theirs."

    def add_arguments(self, parser):
        parser.add_argument("--today", help="Sweep as if today were this date (YYYY-MM-DD), e.g. to preview.")

    def handle(self, *args, **options):
        today = None
        if options["today"]:
            try:
                today = datetime.date.fromisoformat(options["today"])
            except ValueError as error:
                raise CommandError(f"--today must be a date like 2026-12-31, not {options['today']!r}.") from error
        summary = services.sweep_freshness(today=today)
        self.stdout.write(
            f"Marked {summary['marked_stale']} source(s) stale; notified {summary['owners_notified']} owner(s); "
            f"{summary['owners_without_email']} owner(s) without an e-mail address; {summary['failed']} failed."
        )
        if summary["failed"]:
            raise CommandError("Some owners could not be notified; their sources stay unflagged until the next sweep.")
