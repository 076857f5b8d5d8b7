import hashlib

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    class Role(models.TextChoices):
        HOMEOWNER = "homeowner"
        CONTRACTOR = "contractor"
        HELPER = "helper"
        OPERATOR = "operator"

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.HOMEOWNER)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__in=["homeowner", "contractor", "helper", "operator"]),
                name="user_role_valid",
            ),
            # is_staff (the admin's door) is derived, never set on its own: staff exactly when
            # operator or superuser (staff_status_for). accounts.services.user_set_role keeps it.
            models.CheckConstraint(
                condition=(
                    models.Q(is_staff=True)
                    & (models.Q(role="operator") | models.Q(is_superuser=True))
                )
                | (
                    models.Q(is_staff=False)
                    & ~models.Q(role="operator")
                    & models.Q(is_superuser=False)
                ),
                name="user_staff_follows_role",
            ),
        ]

    @staticmethod
    def staff_status_for(*, role: str, is_superuser: bool) -> bool:
        """Whether a user with this role is staff (may open the admin): operators and
        superusers. The database constraint `user_staff_follows_role` says the same."""
        return role == User.Role.OPERATOR or bool(is_superuser)

    @property
    def is_operator(self) -> bool:
        return self.role == self.Role.OPERATOR


class ApiKey(models.Model):
    """A Bearer credential. Only the SHA-256 of the key is kept (the key is 32 random bytes, so
    a slow hash adds nothing); the short prefix identifies it to people."""

    PREFIX = "esk"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.PREFIX}_{self.prefix}…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @staticmethod
    def hash(raw_key: str) -> str:
        return hashlib.sha256(raw_key.encode()).hexdigest()


class ConnectionClose(models.Model):
    """A close message for live connections (accounts.connections), kept for a few minutes
    so that server processes that do not share a channel layer (embedded mode: several
    `make serve` processes, each with its in-memory layer) read it from here
    (realtime.tailer) and close their own connections too. Written in the transaction of the
    change that ended the credential."""

    group = models.CharField(max_length=100)
    sessions_only = models.BooleanField(default=False)
    reason = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.reason} → {self.group}"
