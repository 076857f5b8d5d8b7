"""Payouts to contractors and their connected accounts."""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from payments.models._common import status_check as _status_check
from payments.models.payments import Payment


class PayoutAccount(models.Model):
    """Where a contractor's money goes at the gateway (a Stripe Connect account id)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payout_accounts"
    )
    provider = models.CharField(max_length=16)
    account_id = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "provider"], name="payout_account_unique")
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.account_id}"


class Payout(models.Model):
    """A transfer of a released milestone's payable amount to the contractor, or (with
    `retry_of`) of what a failed or reversed payout of the same milestone left owed, or (purpose
    `balance`, no milestone) of a user's payable balance.

    `amount_reversed` is what the gateway took back from the connected account (Stripe's
    `transfer.amount_reversed`, cumulative): it only grows, never past `amount` (database
    checks), and is non-zero exactly when the payout is partially_reversed or reversed."""

    class Status(models.TextChoices):
        PENDING = "pending"  # recorded, ledger moved payable -> in transit; gateway call queued
        PAID = "paid"
        FAILED = "failed"
        NEEDS_ACCOUNT = "needs_account"  # the contractor has no payout account yet
        # The gateway reversed part / all of a paid transfer: that money is owed again.
        PARTIALLY_REVERSED = "partially_reversed"
        REVERSED = "reversed"

    TRANSITIONS = {
        Status.PENDING: {Status.PAID, Status.FAILED, Status.NEEDS_ACCOUNT},
        # failed: payout_process's transfer failed for good while another run found no
        # payout account (_payout_failed fails a pending or needs_account payout).
        Status.NEEDS_ACCOUNT: {Status.PENDING, Status.FAILED},
        Status.PAID: {Status.PARTIALLY_REVERSED, Status.REVERSED},
        # A further partial reversal stays partially_reversed (amount_reversed grows).
        Status.PARTIALLY_REVERSED: {Status.REVERSED},
        Status.REVERSED: set(),
        Status.FAILED: set(),
    }
    # Statuses whose transfer exists at the gateway and may still be reversed (further).
    REVERSIBLE = frozenset({Status.PAID, Status.PARTIALLY_REVERSED})
    REVERSED_STATUSES = frozenset({Status.PARTIALLY_REVERSED, Status.REVERSED})

    # Statuses of a payout still on its way: one per milestone at a time (database).
    ACTIVE = frozenset({Status.PENDING, Status.NEEDS_ACCOUNT})
    # Statuses that left money owed to the contractor again, which payout_retry pays.
    RETRYABLE = frozenset({Status.FAILED, *REVERSED_STATUSES})

    class Purpose(models.TextChoices):
        MILESTONE = "milestone"  # a released milestone's payable (milestone set)
        # A user's payable balance paid in one transfer, with no milestone: scheduled payouts
        # and helper pay (their owners post the ledger; payments carries the transfer out).
        BALANCE = "balance"

    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.MILESTONE)
    # The milestone's first payout (retry_of null) is unique per milestone; a failed or
    # reversed one is paid again by a new payout pointing at it (payouts.payout_retry).
    milestone = models.ForeignKey(
        "escrow.Milestone",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="payouts",
    )
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="retries"
    )
    # How much of `retry_of` was owed again when this retry was made (all of a failed one's
    # amount, a reversed one's cumulative amount_reversed); this payout pays the growth since
    # the previous retry of it. Unique with retry_of: each owed step is paid once.
    retry_of_amount_owed = models.BigIntegerField(null=True, blank=True)
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="payouts"
    )
    payee = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    provider = models.CharField(max_length=16)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    amount_reversed = models.BigIntegerField(default=0)
    destination = models.CharField(max_length=255, blank=True)
    transfer_group = models.CharField(max_length=64, blank=True)
    gateway_transfer_id = models.CharField(max_length=255, blank=True, db_index=True)
    failure_code = models.CharField(max_length=64, blank=True)
    attempt_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    reversed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            _status_check(
                "payout_status_valid",
                ["pending", "paid", "failed", "needs_account", "partially_reversed", "reversed"],
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payout_amount_positive"),
            models.CheckConstraint(
                condition=Q(purpose="milestone", milestone__isnull=False)
                | Q(purpose="balance", milestone__isnull=True),
                name="payout_purpose_matches_milestone",
            ),
            models.UniqueConstraint(
                fields=["milestone"],
                condition=Q(retry_of__isnull=True),
                name="payout_first_per_milestone",
            ),
            models.UniqueConstraint(
                fields=["retry_of", "retry_of_amount_owed"], name="payout_retry_once_per_step"
            ),
            models.UniqueConstraint(
                fields=["milestone"],
                condition=Q(status__in=["pending", "needs_account"]),
                name="payout_one_active_per_milestone",
            ),
            models.CheckConstraint(
                condition=Q(retry_of__isnull=True, retry_of_amount_owed__isnull=True)
                | Q(retry_of__isnull=False, retry_of_amount_owed__gt=0),
                name="payout_retry_has_amount_owed",
            ),
            models.CheckConstraint(
                condition=Q(amount_reversed__gte=0, amount_reversed__lte=F("amount")),
                name="payout_amount_reversed_range",
            ),
            # Reversed money and a reversed status go together, whatever code writes the row.
            models.CheckConstraint(
                condition=(Q(amount_reversed=0) & ~Q(status__in=["partially_reversed", "reversed"]))
                | Q(
                    status="partially_reversed",
                    amount_reversed__gt=0,
                    amount__gt=F("amount_reversed"),
                )
                | Q(status="reversed", amount_reversed=F("amount")),
                name="payout_reversal_matches_status",
            ),
        ]

    def __str__(self) -> str:
        return f"payout #{self.pk} {self.amount} {self.currency} ({self.status})"

    @classmethod
    def status_after_reversal(cls, *, amount: int, amount_reversed: int) -> str:
        return cls.Status.REVERSED if amount_reversed >= amount else cls.Status.PARTIALLY_REVERSED
