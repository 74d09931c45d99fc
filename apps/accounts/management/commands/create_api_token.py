from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import User
from apps.accounts.services import create_api_token


class Command(BaseCommand):
    help = "Create an API token acting as a user. The token is printed once and never stored."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", required=True, help="What will use the token, e.g. 'Zendesk integration'.")

    def handle(self, *args, username, name, **options):
        user = User.objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {username!r}.")
        token, raw_token = create_api_token(user=user, name=name)
        self.stdout.write(raw_token)
        self.stderr.write(f"Token {token.prefix}… for {user.username}: copy it now, it will not be shown again.")
