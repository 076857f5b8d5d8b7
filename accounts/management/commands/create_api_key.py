from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a user and print it alone on the last line (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="")

    def handle(self, *args, username, name, **options):
        try:
            user = User.objects.get(username=username)
        except User.DoesNotExist as exc:
            raise CommandError(f"no user {username!r}") from exc
        api_key, raw_key = api_key_create(user=user, name=name)
        self.stdout.write(f"API key {api_key} for {user.username} (store it now; it is not kept):")
        self.stdout.write(raw_key)
