"""Payouts to contractors and their connected accounts."""

from django.conf import settings
from django.db import models
from django.db.models import Q

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
    """A transfer of a released milestone's payable amount to the contractor."""

    class Status(models.TextChoices):
        PENDING = "pending"  # recorded, ledger moved payable -> in transit; gateway call queued
        PAID = "paid"
        FAILED = "failed"
        NEEDS_ACCOUNT = "needs_account"  # the contractor has no payout account yet

    TRANSITIONS = {
        Status.PENDING: {Status.PAID, Status.FAILED, Status.NEEDS_ACCOUNT},
        Status.NEEDS_ACCOUNT: {Status.PENDING},
        Status.PAID: set(),
        Status.FAILED: set(),
    }

    milestone = models.OneToOneField(
        "escrow.Milestone", on_delete=models.PROTECT, related_name="payout"
    )
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="payouts"
    )
    payee = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    provider = models.CharField(max_length=16)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    destination = models.CharField(max_length=255, blank=True)
    transfer_group = models.CharField(max_length=64, blank=True)
    gateway_transfer_id = models.CharField(max_length=255, blank=True, db_index=True)
    failure_code = models.CharField(max_length=64, blank=True)
    attempt_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            _status_check("payout_status_valid", ["pending", "paid", "failed", "needs_account"]),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payout_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"payout #{self.pk} {self.amount} {self.currency} ({self.status})"
