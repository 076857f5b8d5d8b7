"""Reads of payments, always filtered by who is asking: payer, payee, operators (staff)."""

from django.db.models import Q, QuerySet

from payments.exceptions import PaymentNotFound
from payments.models import Payment, PaymentMethod


def _visible(user) -> Q:
    if user is None or not user.is_authenticated:
        return Q(pk__in=[])
    if user.is_staff:
        return Q()
    return Q(payer=user) | Q(payee=user)


def payment_list_for_user(*, user) -> QuerySet[Payment]:
    return Payment.objects.filter(_visible(user)).order_by("-id")


def payment_get_for_user(*, user, payment_id) -> Payment:
    """Raises PaymentNotFound, also for payments the user may not see."""
    try:
        payment_id = int(payment_id)
    except (TypeError, ValueError) as exc:
        raise PaymentNotFound() from exc
    payment = Payment.objects.filter(_visible(user), pk=payment_id).first()
    if payment is None:
        raise PaymentNotFound()
    return payment


def payment_next_action_for(*, user, payment: Payment) -> dict | None:
    """What the payer must do to finish 3-D Secure: `{type, client_secret, redirect_url?}`
    (type "use_stripe_sdk": `stripe.handleNextAction({clientSecret})`; "redirect_to_url":
    send the payer to `redirect_url`). Only for the payer (the client secret confirms the
    payment: never for the payee or operators) and only while the payment is verifying;
    None otherwise."""
    if (
        user is None
        or not user.is_authenticated
        or user.pk != payment.payer_id
        or payment.status != Payment.Status.VERIFYING
        or not payment.next_action.get("type")
        or not payment.gateway_client_secret
    ):
        return None
    action = {"type": payment.next_action["type"], "client_secret": payment.gateway_client_secret}
    if payment.next_action.get("redirect_url"):
        action["redirect_url"] = payment.next_action["redirect_url"]
    return action


def payment_is_visible_to(*, user, payment_id) -> bool:
    """For realtime's channel authorization (payment.<id>)."""
    try:
        payment_id = int(payment_id)
    except (TypeError, ValueError):
        return False
    return Payment.objects.filter(_visible(user), pk=payment_id).exists()


def payment_method_list_for_user(*, user) -> QuerySet[PaymentMethod]:
    return PaymentMethod.objects.filter(user=user).exclude(status=PaymentMethod.Status.REMOVED)
