"""Payments, the gateway attempts made for them, and refunds."""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from payments.models._common import status_check as _status_check
from payments.models.methods import PaymentMethod


class Payment(models.Model):
    """Money in for one milestone. Amounts in minor units."""

    class Status(models.TextChoices):
        INITIATED = "initiated"
        PROCESSING = "processing"
        VERIFYING = "verifying"
        AUTHORIZED = "authorized"
        COMPLETED = "completed"
        FAILED = "failed"
        REJECTED = "rejected"
        DECLINED = "declined"
        CANCELLED = "cancelled"
        PARTIALLY_REFUNDED = "partially_refunded"
        REFUNDED = "refunded"

    # ARCHITECTURE.md's machine. The happy path may skip steps a gateway does not report (a
    # card without 3-D Secure goes processing -> authorized; automatic capture goes straight
    # to completed), never backwards.
    TRANSITIONS = {
        Status.INITIATED: {Status.PROCESSING, Status.CANCELLED},
        Status.PROCESSING: {
            Status.VERIFYING,
            Status.AUTHORIZED,
            Status.COMPLETED,
            Status.FAILED,
            Status.CANCELLED,
        },
        # rejected: the card holder failed 3-D Secure; cancelled: they never finished it
        # (PAYMENTS_VERIFICATION_TIMEOUT_SECONDS) and we cancelled the intent at the gateway.
        Status.VERIFYING: {
            Status.AUTHORIZED,
            Status.COMPLETED,
            Status.REJECTED,
            Status.CANCELLED,
        },
        Status.AUTHORIZED: {Status.COMPLETED, Status.DECLINED},
        Status.COMPLETED: {Status.PARTIALLY_REFUNDED, Status.REFUNDED},
        Status.PARTIALLY_REFUNDED: {Status.PARTIALLY_REFUNDED, Status.REFUNDED},
        Status.FAILED: set(),
        Status.REJECTED: set(),
        Status.DECLINED: set(),
        Status.CANCELLED: set(),
        Status.REFUNDED: set(),
    }
    # Progress along the happy path: a gateway report for a lower rank than the stored one is
    # stale (webhooks arrive in any order) and is ignored.
    RANK = {
        Status.INITIATED: 0,
        Status.PROCESSING: 1,
        Status.VERIFYING: 2,
        Status.AUTHORIZED: 3,
        Status.COMPLETED: 4,
        Status.PARTIALLY_REFUNDED: 5,
        Status.REFUNDED: 6,
        Status.FAILED: 10,
        Status.REJECTED: 10,
        Status.DECLINED: 10,
        Status.CANCELLED: 10,
    }
    FAILURES = frozenset({Status.FAILED, Status.REJECTED, Status.DECLINED, Status.CANCELLED})
    CAPTURED = frozenset({Status.COMPLETED, Status.PARTIALLY_REFUNDED, Status.REFUNDED})
    # Before the gateway has the money: the processing task still owns these.
    OPEN = frozenset({Status.INITIATED, Status.PROCESSING, Status.VERIFYING, Status.AUTHORIZED})

    class Purpose(models.TextChoices):
        FUNDING = "funding"  # a milestone's escrow: completed, escrow funds the milestone
        # Money in for the project that is not a milestone's escrow (an extra the homeowner
        # pays ahead, billing's wallet): completed, payments fires reactions.payment_completed
        # and the owner of the purpose posts it; escrow's funding is never touched.
        TOP_UP = "top_up"

    # Every funding payment has its milestone (database); a top-up may have none.
    milestone = models.ForeignKey(
        "escrow.Milestone",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="payments",
    )
    project = models.ForeignKey("escrow.Project", on_delete=models.PROTECT, related_name="+")
    payer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments_made"
    )
    payee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments_received"
    )
    payment_method = models.ForeignKey(
        PaymentMethod, null=True, blank=True, on_delete=models.PROTECT, related_name="payments"
    )
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.FUNDING)
    provider = models.CharField(max_length=16)
    amount = models.BigIntegerField()
    amount_refunded = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.INITIATED)
    capture_method = models.CharField(max_length=16, default="manual")
    failure_code = models.CharField(max_length=64, blank=True)
    failure_message = models.CharField(max_length=255, blank=True)
    gateway_payment_id = models.CharField(max_length=255, blank=True, db_index=True)
    gateway_charge_id = models.CharField(max_length=255, blank=True, db_index=True)
    # While verifying: what the payer's browser must do to finish 3-D Secure
    # (gateways.base.next_action_from) and the intent's client secret, which lets the payer's
    # browser (Stripe.js) complete it. Shown to the payer only (selectors), cleared on leaving
    # verifying, never put in events or logs.
    next_action = models.JSONField(default=dict, blank=True)
    gateway_client_secret = models.CharField(max_length=255, blank=True)
    attempt_count = models.PositiveIntegerField(default=0)
    # The next processing run; while verifying, when an unfinished 3-D Secure challenge is
    # given up (payments.work_due then cancels it).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    is_high_priority = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            _status_check(
                "payment_status_valid",
                [
                    "initiated",
                    "processing",
                    "verifying",
                    "authorized",
                    "completed",
                    "failed",
                    "rejected",
                    "declined",
                    "cancelled",
                    "partially_refunded",
                    "refunded",
                ],
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(
                condition=Q(purpose="top_up") | Q(purpose="funding", milestone__isnull=False),
                name="payment_purpose_valid",
            ),
            models.CheckConstraint(
                condition=Q(amount_refunded__gte=0) & Q(amount_refunded__lte=F("amount")),
                name="payment_refund_within_amount",
            ),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[a-z]{3}$"), name="payment_currency_lowercase"
            ),
            # One live funding payment per milestone: a second fund request while one is in
            # flight or done is refused by the database, not by a check-then-insert.
            models.UniqueConstraint(
                fields=["milestone"],
                condition=Q(
                    purpose="funding",
                    status__in=[
                        "initiated",
                        "processing",
                        "verifying",
                        "authorized",
                        "completed",
                        "partially_refunded",
                        "refunded",
                    ],
                ),
                name="payment_one_live_funding_per_milestone",
            ),
        ]
        indexes = [
            models.Index(fields=["payer", "-id"], name="payment_payer"),
            models.Index(fields=["payee", "-id"], name="payment_payee"),
            models.Index(
                fields=["next_attempt_at"],
                name="payment_due",
                condition=Q(status__in=["initiated", "processing", "verifying", "authorized"]),
            ),
        ]

    def __str__(self) -> str:
        return f"payment #{self.pk} {self.amount} {self.currency} ({self.status})"

    @property
    def amount_refundable(self) -> int:
        return self.amount - self.amount_refunded

    def party_ids(self) -> list[int]:
        return [self.payer_id, self.payee_id]


class GatewayAttempt(models.Model):
    """One call to a gateway: what we asked (with the idempotency key derived from our own row,
    so a retry after a lost response can never do the thing twice) and what came back."""

    class Operation(models.TextChoices):
        AUTHORIZE = "authorize"
        CAPTURE = "capture"
        CANCEL = "cancel"
        RETRIEVE = "retrieve"
        REFUND = "refund"
        TRANSFER = "transfer"
        CUSTOMER = "customer"  # create the user's gateway customer
        ATTACH = "attach"  # attach a payment method to it

    class Outcome(models.TextChoices):
        PENDING = "pending"  # sent; no answer recorded (a crash, or still running)
        SUCCEEDED = "succeeded"
        DECLINED = "declined"  # a definitive no (never retried)
        TRANSIENT_ERROR = "transient_error"  # network, 429, 5xx: retried with backoff
        UNKNOWN = "unknown"  # timeout: resolved with the same idempotency key before retrying
        ERROR = "error"  # a definitive error that is not a decline (bad request, auth)
        SHORT_CIRCUITED = "short_circuited"  # the breaker was open; nothing was sent

    provider = models.CharField(max_length=16)
    operation = models.CharField(max_length=16, choices=Operation.choices)
    idempotency_key = models.CharField(max_length=255, db_index=True)
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.CASCADE, related_name="attempts"
    )
    refund = models.ForeignKey(
        "Refund", null=True, blank=True, on_delete=models.CASCADE, related_name="attempts"
    )
    payout = models.ForeignKey(
        "Payout", null=True, blank=True, on_delete=models.CASCADE, related_name="attempts"
    )
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.PENDING)
    gateway_object_id = models.CharField(max_length=255, blank=True)
    gateway_status = models.CharField(max_length=32, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=255, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["provider", "operation", "-id"], name="attempt_op")]

    def __str__(self) -> str:
        return f"{self.operation} {self.idempotency_key} → {self.outcome}"


class Refund(models.Model):
    """Money back to the payer from one payment, partial or whole."""

    class Status(models.TextChoices):
        PENDING = "pending"  # recorded; the gateway call is queued or running
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    TRANSITIONS = {
        Status.PENDING: {Status.SUCCEEDED, Status.FAILED},
        Status.SUCCEEDED: set(),
        Status.FAILED: set(),
    }

    class Reason(models.TextChoices):
        OPERATOR = "operator"
        MILESTONE_REFUNDED = "milestone_refunded"
        DISPUTE = "dispute"

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reason = models.CharField(max_length=32, choices=Reason.choices, default=Reason.OPERATOR)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The milestone refund the gateway refund carries out (one per milestone, by the database).
    milestone = models.ForeignKey(
        "escrow.Milestone", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    gateway_refund_id = models.CharField(max_length=255, blank=True, db_index=True)
    failure_code = models.CharField(max_length=64, blank=True)
    attempt_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            _status_check("refund_status_valid", ["pending", "succeeded", "failed"]),
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
            models.UniqueConstraint(
                fields=["milestone"],
                condition=Q(milestone__isnull=False),
                name="refund_one_per_milestone_refund",
            ),
        ]

    def __str__(self) -> str:
        return f"refund #{self.pk} {self.amount} {self.currency} ({self.status})"
