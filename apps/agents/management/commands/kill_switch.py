from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import Tenant, User
from apps.agents.models import KillSwitch
from apps.agents.services import set_kill_switch


class Command(BaseCommand):
    help = (
        "Engage, release or show the global kill switch (or one tenant's with --tenant). "
        "For incidents when the web console is not at hand."
    )

    def add_arguments(self, parser):
        parser.add_argument("operation", choices=["engage", "release", "status"])
        parser.add_argument("--reason", help="Why (required for engage and release).")
        parser.add_argument("--by", help="Username of the person operating the switch (required for engage/release).")
        parser.add_argument("--tenant", help="A tenant slug; omit for the global switch.")

    def handle(self, *args, operation, reason, by, tenant, **options):
        tenant_row = None
        if tenant:
            tenant_row = Tenant.objects.filter(slug=tenant).first()
            if tenant_row is None:
                raise CommandError(f"No tenant with slug {tenant!r}.")
        if operation == "status":
            for switch in KillSwitch.objects.select_related("tenant", "changed_by"):
                self.stdout.write(
                    f"{switch}: {switch.reason or '-'} (by {switch.changed_by or '-'} at {switch.changed_at})"
                )
            return
        if not by:
            raise CommandError("--by is required: say who is operating the switch.")
        user = User.objects.filter(username=by, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {by!r}.")
        try:
            switch = set_kill_switch(engaged=operation == "engage", by=user, reason=reason or "", tenant=tenant_row)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from error
        except PermissionDenied as error:
            raise CommandError(str(error)) from error
        self.stdout.write(self.style.SUCCESS(str(switch)))
