"""Demo data for `make run`, loaded once: a homeowner, a contractor, a helper and an operator
with printed logins, and a project with milestones between the first two."""

import os

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
        created = self._load_card(users[User.Role.HOMEOWNER]) or created
        self.stdout.write("Demo data " + ("loaded." if created else "already present."))
        port = os.environ.get("PORT", "8000")
        self.stdout.write(f"Demo logins (http://127.0.0.1:{port}/accounts/login/):")
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

    def _load_card(self, homeowner) -> bool:
        """A saved sandbox test card, so the demo homeowner can fund at once (embedded mode
        only: with Stripe configured, cards are added through Stripe Elements)."""
        from django.conf import settings

        from common.errors import DomainError
        from payments import services as payment_services
        from payments.models import PaymentMethod

        if settings.PAYMENT_GATEWAY != "sandbox":
            return False
        if PaymentMethod.objects.filter(user=homeowner).exists():
            return False
        try:
            payment_services.payment_method_create(user=homeowner, token="pm_card_visa")
        except DomainError as error:
            self.stderr.write(f"No demo card: {error.message}")
            return False
        return True
