"""Demo data for `make run`, loaded once: a homeowner, a contractor, a helper and an operator
with printed logins, and a project with milestones between the first two."""

from django.core.management.base import BaseCommand

from accounts.models import User
from accounts.services import user_create

DEMO_USERS = [
    ("homeowner", User.Role.HOMEOWNER, "homeowner-demo"),
    ("contractor", User.Role.CONTRACTOR, "contractor-demo"),
    ("helper", User.Role.HELPER, "helper-demo"),
    ("operator", User.Role.OPERATOR, "operator-demo"),
]


class Command(BaseCommand):
    help = "Load demo users and a demo project once; print the logins."

    def handle(self, *args, **options):
        # Each service owns its transaction; a rerun finds what exists and skips it.
        created = False
        users = {}
        for username, role, password in DEMO_USERS:
            user = User.objects.filter(username=username).first()
            if user is None:
                user = user_create(
                    username=username,
                    role=role,
                    password=password,
                    email=f"{username}@example.com",
                )
                created = True
            users[role] = user
        created = self._load_project(users) or created
        self.stdout.write("Demo data " + ("loaded." if created else "already present."))
        self.stdout.write("Demo logins (http://127.0.0.1:8000/accounts/login/):")
        for username, role, password in DEMO_USERS:
            self.stdout.write(f"  {role:<11} {username} / {password}")

    def _load_project(self, users) -> bool:
        try:
            from escrow.demo import load_demo_project
        except ImportError:
            return False
        return load_demo_project(
            homeowner=users[User.Role.HOMEOWNER], contractor=users[User.Role.CONTRACTOR]
        )
