"""Payment methods: a gateway token plus display data (brand, last4, expiry), never a card
number. Each status change emits payment_method.status_changed to its owner."""

from __future__ import annotations

from datetime import date, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from common.transitions import transition
from payments.calls import call_gateway
from payments.exceptions import PaymentMethodNotFound, PaymentMethodRefused
from payments.gateways import GatewayError, default_provider, get_gateway
from payments.models import GatewayAttempt, GatewayCustomer, PaymentMethod
from realtime.events import emit

Status = PaymentMethod.Status


def _emit_status_changed(method: PaymentMethod, *, previous: str | None, **extra) -> None:
    emit(
        "payment_method.status_changed",
        {
            "payment_method_id": method.pk,
            "brand": method.brand,
            "last4": method.last4,
            "status": method.status,
            "previous_status": previous,
            "is_default": method.is_default,
            **extra,
        },
        aggregate=("payment_method", method.pk),
        audience=[method.user_id],
        channels=[f"user.{method.user_id}.payment_methods"],
    )


def customer_key(user) -> str:
    return f"customer:user:{user.pk}"


def gateway_customer_for(*, user, provider: str, gateway) -> str:
    """The user's customer id at the gateway, created on first use.

    Idempotent: the gateway call carries the key "customer:user:<id>" (a retry after a lost
    answer, or two first payment methods at once, get the same customer back) and our row is
    unique per (user, provider). Raises GatewayError. Never inside a transaction."""
    existing = GatewayCustomer.objects.filter(user=user, provider=provider).first()
    if existing is not None:
        return existing.customer_id
    key = customer_key(user)
    customer_id = call_gateway(
        provider=provider,
        operation=GatewayAttempt.Operation.CUSTOMER,
        idempotency_key=key,
        fn=lambda: gateway.create_customer(
            email=user.email or "", metadata={"user_id": user.pk}, idempotency_key=key
        ),
    )
    try:
        with transaction.atomic():
            GatewayCustomer.objects.create(user=user, provider=provider, customer_id=customer_id)
    except IntegrityError:
        return GatewayCustomer.objects.get(user=user, provider=provider).customer_id
    return customer_id


def payment_method_create(*, user, token: str) -> PaymentMethod:
    """Add a gateway token for the user. The gateway describes it (brand, last4, expiry); a
    token it does not know is refused (PaymentMethodRefused, 422). On a gateway that keeps
    methods on a customer (Stripe) the token is attached to the user's customer first (created
    once, `gateway_customer_for`) and the attached method's id is what we store and charge.
    The first method becomes the default. Emits payment_method.status_changed (pending →
    verified)."""
    provider = default_provider()
    gateway = get_gateway(provider)
    key = f"payment-method:{user.pk}:{token}"[:255]
    customer_id = ""
    try:
        if gateway.uses_customers:
            customer_id = gateway_customer_for(user=user, provider=provider, gateway=gateway)
            info = call_gateway(
                provider=provider,
                operation=GatewayAttempt.Operation.ATTACH,
                idempotency_key=f"{key}:attach"[:255],
                fn=lambda: gateway.attach_method(
                    token=token, customer_id=customer_id, idempotency_key=f"{key}:attach"[:255]
                ),
            )
        else:
            info = call_gateway(
                provider=provider,
                operation=GatewayAttempt.Operation.RETRIEVE,
                idempotency_key=key,
                fn=lambda: gateway.describe_method(token=token),
            )
    except GatewayError as exc:
        raise PaymentMethodRefused(
            f"The gateway refused this payment method: {exc.message}"
        ) from exc
    with transaction.atomic(durable=True):
        has_default = PaymentMethod.objects.filter(user=user, is_default=True).exists()
        method = PaymentMethod.objects.create(
            user=user,
            provider=provider,
            token=info.token,
            customer_id=customer_id,
            brand=info.brand,
            last4=info.last4,
            exp_month=info.exp_month,
            exp_year=info.exp_year,
            status=Status.VERIFIED,
            is_default=not has_default,
        )
        _emit_status_changed(method, previous=Status.PENDING)
    return method


def payment_method_set_default(*, user, payment_method_id: int) -> PaymentMethod:
    """Make one of the user's methods the default (one per user, by the database)."""
    with transaction.atomic(durable=True):
        methods = PaymentMethod.objects.select_for_update().filter(user=user)
        method = methods.filter(pk=payment_method_id).exclude(status=Status.REMOVED).first()
        if method is None:
            raise PaymentMethodNotFound()
        if not method.is_default:
            methods.filter(is_default=True).update(is_default=False)
            method.is_default = True
            method.save(update_fields=["is_default", "updated_at"])
            _emit_status_changed(method, previous=method.status)
    return method


def payment_method_remove(*, user, payment_method_id: int) -> PaymentMethod:
    """Remove a method (the row stays for the payments made with it). Idempotent."""
    with transaction.atomic(durable=True):
        method = (
            PaymentMethod.objects.select_for_update()
            .filter(user=user, pk=payment_method_id)
            .first()
        )
        if method is None:
            raise PaymentMethodNotFound()
        if method.status != Status.REMOVED:
            method.is_default = False
            previous = transition(method, to=Status.REMOVED, also=["is_default"])
            _emit_status_changed(method, previous=previous)
    return method


def _expiry(method: PaymentMethod) -> date | None:
    if not method.exp_month or not method.exp_year:
        return None
    first_of_next = date(method.exp_year + method.exp_month // 12, method.exp_month % 12 + 1, 1)
    return first_of_next - timedelta(days=1)


def payment_methods_expiry_check(*, today: date | None = None, warn_days: int = 30) -> dict:
    """Beat: expired verified methods become expired (status_changed); those expiring within
    `warn_days` get one payment_method.expiring warning each."""
    today = today or timezone.now().date()
    expired = warned = 0
    for method in PaymentMethod.objects.filter(status=Status.VERIFIED).exclude(exp_year=None)[
        :1000
    ]:
        last_day = _expiry(method)
        if last_day is None:
            continue
        with transaction.atomic():
            locked = PaymentMethod.objects.select_for_update().get(pk=method.pk)
            if locked.status != Status.VERIFIED:
                continue
            if last_day < today:
                transition(locked, to=Status.EXPIRED)
                _emit_status_changed(locked, previous=Status.VERIFIED)
                expired += 1
            elif last_day <= today + timedelta(days=warn_days) and locked.expiry_warned_at is None:
                locked.expiry_warned_at = timezone.now()
                locked.save(update_fields=["expiry_warned_at", "updated_at"])
                emit(
                    "payment_method.expiring",
                    {
                        "payment_method_id": locked.pk,
                        "brand": locked.brand,
                        "last4": locked.last4,
                        "expires_on": last_day.isoformat(),
                        "status": locked.status,
                    },
                    aggregate=("payment_method", locked.pk),
                    audience=[locked.user_id],
                    channels=[f"user.{locked.user_id}.payment_methods"],
                )
                warned += 1
    return {"expired": expired, "warned": warned}
