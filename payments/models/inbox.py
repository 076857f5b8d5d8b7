"""The incoming-webhook inbox."""

from django.db import models
from django.db.models import Q

from payments.models._common import status_check as _status_check


class WebhookEvent(models.Model):
    """The inbox: one row per (provider, event id), inserted before we answer 2xx."""

    class Status(models.TextChoices):
        RECEIVED = "received"
        PROCESSED = "processed"
        IGNORED = "ignored"  # a type we do not act on, or stale
        PARKED = "parked"  # refers to an object we do not know (yet); retried
        FAILED = "failed"  # gave up after the retries; an operator can replay

    provider = models.CharField(max_length=16)
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=255, blank=True)
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="webhook_event_unique"),
            _status_check(
                "webhook_event_status_valid",
                ["received", "processed", "ignored", "parked", "failed"],
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_event_due",
                condition=Q(status__in=["received", "parked"]),
            ),
            # The worker's top-up and the lost-enqueue sweep: received rows by id.
            models.Index(
                fields=["id"], name="webhook_event_received", condition=Q(status="received")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_id} {self.type}"
