from django.conf import settings
from django.db import models


class IdempotencyRecord(models.Model):
    """One POST made with an Idempotency-Key, per caller. The unique constraint is what makes
    two concurrent requests with one key run once: the second insert fails."""

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress"
        COMPLETED = "completed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    request_hash = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=State.choices, default=State.IN_PROGRESS)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.BinaryField(null=True, blank=True)
    response_content_type = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_unique_user_key"),
            models.CheckConstraint(
                condition=models.Q(state__in=["in_progress", "completed"]),
                name="idempotency_state_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key}"
