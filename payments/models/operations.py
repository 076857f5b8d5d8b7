"""Operations: circuit breakers, reconciliation findings and the sandbox gateway's records."""

from django.db import models


class CircuitBreaker(models.Model):
    """A breaker per gateway operation. In the embedded default this row is the shared state;
    with Redis the live state is in Redis and this row mirrors each transition for the admin."""

    class State(models.TextChoices):
        CLOSED = "closed"
        OPEN = "open"
        HALF_OPEN = "half_open"

    name = models.CharField(max_length=64, unique=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CLOSED)
    opened_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)
    probe_started_at = models.DateTimeField(null=True, blank=True)
    last_error_rate = models.FloatField(default=0.0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name}: {self.state}"


class CircuitBreakerWindow(models.Model):
    """Call counts per breaker per time bucket (the database store's sliding window)."""

    name = models.CharField(max_length=64)
    bucket = models.BigIntegerField(help_text="Unix time // bucket seconds.")
    successes = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "bucket"], name="breaker_window_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} @{self.bucket}: {self.successes} ok, {self.failures} failed"


class ReconciliationRun(models.Model):
    provider = models.CharField(max_length=16)
    since = models.DateTimeField()
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    checked = models.PositiveIntegerField(default=0)
    discrepancy_count = models.PositiveIntegerField(default=0)
    repaired_count = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=255, blank=True)

    def __str__(self) -> str:
        return f"reconciliation #{self.pk} {self.provider} since {self.since:%Y-%m-%d}"


class Discrepancy(models.Model):
    """One difference between the gateway's records and ours."""

    class Kind(models.TextChoices):
        MISSING_LOCALLY = "missing_locally"
        MISSING_AT_GATEWAY = "missing_at_gateway"
        AMOUNT_MISMATCH = "amount_mismatch"
        STATUS_MISMATCH = "status_mismatch"
        LEDGER_MISSING = "ledger_missing"

    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="findings")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    object_type = models.CharField(max_length=32)
    gateway_object_id = models.CharField(max_length=255, blank=True)
    local_id = models.CharField(max_length=64, blank=True)
    detail = models.CharField(max_length=500)
    is_repaired = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "discrepancies"

    def __str__(self) -> str:
        return f"{self.kind} {self.object_type} {self.gateway_object_id or self.local_id}"


class SandboxObject(models.Model):
    """The sandbox gateway's own records (it plays an external gateway, so it keeps its state
    where every process sees it). Not used with the Stripe adapter."""

    object_id = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=32)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.object_id
