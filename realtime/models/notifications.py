from django.conf import settings
from django.db import models


class Notification(models.Model):
    """Something a person should see (in the portal) and, for what they must act on, read in
    an e-mail. Derived from an event after commit; one per (event, user, kind)."""

    class Kind(models.TextChoices):
        PAYMENT_FAILED = "payment_failed"
        MILESTONE_SUBMITTED = "milestone_submitted"
        FUNDS_RELEASED = "funds_released"
        DISPUTE_UPDATED = "dispute_updated"
        PAYMENT_DUE = "payment_due"
        WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint_disabled"
        CIRCUIT_BREAKER = "circuit_breaker"
        MILESTONE_FUNDED = "milestone_funded"
        INSPECTION_REQUESTED = "inspection_requested"
        MILESTONE_REFUNDED = "milestone_refunded"

    class EmailStatus(models.TextChoices):
        NOT_WANTED = "not_wanted"
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    event = models.ForeignKey(
        "realtime.Event",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        to_field="position",
    )
    # Dedupe key for notifications without an event (e.g. "webhook_endpoint:12:disabled").
    key = models.CharField(max_length=100)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    url = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)
    email_status = models.CharField(
        max_length=16, choices=EmailStatus.choices, default=EmailStatus.NOT_WANTED
    )
    emailed_at = models.DateTimeField(null=True, blank=True)
    # Why the e-mail was not sent, in words (email_status "failed").
    email_error = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="notification_unique_user_key"),
            models.CheckConstraint(
                condition=models.Q(email_status__in=["not_wanted", "pending", "sent", "failed"]),
                name="notification_email_status_valid",
            ),
        ]
        indexes = [
            models.Index(
                fields=["user", "id"],
                name="notification_unread",
                condition=models.Q(read_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for user {self.user_id}"


class NotificationPreference(models.Model):
    """Per-user e-mail choice. No row means the defaults (e-mail on for every kind)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    email_enabled = models.BooleanField(default=True)
    # Kinds (Notification.Kind values) the user does not want by e-mail.
    email_muted_kinds = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"notification preference of user {self.user_id}"

    def wants_email(self, kind: str) -> bool:
        return self.email_enabled and kind not in self.email_muted_kinds
