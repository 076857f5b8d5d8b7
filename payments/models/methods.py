"""Payment methods: a gateway token plus display data, never a card number."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from payments.models._common import status_check as _status_check


class PaymentMethod(models.Model):
    """A gateway token with display data. Card numbers never reach us."""

    class Status(models.TextChoices):
        PENDING = "pending"  # verification not finished
        VERIFIED = "verified"
        FAILED = "failed"  # the gateway refused it
        EXPIRED = "expired"
        REMOVED = "removed"

    TRANSITIONS = {
        Status.PENDING: {Status.VERIFIED, Status.FAILED, Status.REMOVED},
        Status.VERIFIED: {Status.EXPIRED, Status.REMOVED},
        Status.FAILED: {Status.REMOVED},
        Status.EXPIRED: {Status.REMOVED},
        Status.REMOVED: set(),
    }

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payment_methods"
    )
    provider = models.CharField(max_length=16)
    token = models.CharField(max_length=255, help_text="The gateway's payment-method id.")
    customer_id = models.CharField(
        max_length=255, blank=True, help_text="The gateway customer it is attached to, if any."
    )
    brand = models.CharField(max_length=32, blank=True)
    last4 = models.CharField(max_length=4, blank=True)
    exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    is_default = models.BooleanField(default=False)
    expiry_warned_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            _status_check(
                "payment_method_status_valid",
                ["pending", "verified", "failed", "expired", "removed"],
            ),
            models.UniqueConstraint(
                fields=["user"],
                condition=Q(is_default=True),
                name="payment_method_one_default",
            ),
        ]
        indexes = [models.Index(fields=["user", "-id"], name="payment_method_user")]

    def __str__(self) -> str:
        return f"{self.brand or 'card'} •••• {self.last4 or '????'}"


class GatewayCustomer(models.Model):
    """The user's customer object at a gateway that keeps payment methods on one (Stripe):
    created once per (user, provider) with an idempotency key derived from the user id."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="gateway_customers"
    )
    provider = models.CharField(max_length=16)
    customer_id = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "provider"], name="gateway_customer_unique")
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.customer_id}"
