import os
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from apps.audit.chain import verify_chain
from apps.audit.checkpoints import CheckpointError, trusted_checkpoints


class Command(BaseCommand):
    help = (
        "Walk the audit chain and report OK with the count, or the first broken seq and why "
        "(edited, deleted, reordered, gap, or re-hashed after a signed checkpoint)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="Start at this seq number or ISO date/time (default: the beginning).")
        parser.add_argument(
            "--no-checkpoints", action="store_true", help="Check the chain alone, ignoring signed checkpoints."
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=min(4, os.cpu_count() or 1),
            help="Processes verifying consecutive ranges at once on PostgreSQL (default: CPUs, at most 4).",
        )

    def handle(self, *args, since=None, no_checkpoints=False, workers=1, **options):
        if workers < 1:
            raise CommandError("--workers must be at least 1.")
        start = _parse_since(since)
        try:
            checkpoints = [] if no_checkpoints else trusted_checkpoints()
        except CheckpointError as error:
            raise CommandError(f"Checkpoints cannot be trusted: {error}") from error
        result = verify_chain(since=start, checkpoints=checkpoints, workers=workers)
        if not result.ok:
            raise CommandError(result.summary())
        self.stdout.write(self.style.SUCCESS(result.summary()))


def _parse_since(since: str | None):
    if not since:
        return None
    if since.isdigit():
        return int(since)
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        raise CommandError(f"--since {since!r} is neither a seq number nor an ISO date such as 2026-11-01.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
