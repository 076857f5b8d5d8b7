from django.core.management.base import BaseCommand, CommandError

from accounts.exceptions import UsernameTaken
from accounts.models import User
from accounts.services import user_create


class Command(BaseCommand):
    help = "Create a user with a role."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=User.Role.values)
        parser.add_argument("--password", default=None)
        parser.add_argument("--email", default="")

    def handle(self, *args, username, role, password, email, **options):
        try:
            user = user_create(username=username, role=role, password=password, email=email)
        except UsernameTaken as exc:
            raise CommandError(exc.message) from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"created {user.role} {user.username} (id {user.pk})")
