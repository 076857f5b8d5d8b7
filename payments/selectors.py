"""Reads of payments, always filtered by who is asking: payer, payee, operators (staff)."""

from django.db.models import Q, QuerySet

from payments.exceptions import PaymentNotFound
from payments.models import Payment, PaymentMethod, Payout


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


def payment_for_milestone(*, user, milestone_id) -> Payment | None:
    """The milestone's funding payment that holds or held its money (the live one: in flight,
    completed or refunded), else its latest attempt; None when it has none the user may
    see."""
    payments = Payment.objects.filter(
        _visible(user), milestone_id=milestone_id, purpose=Payment.Purpose.FUNDING
    )
    live = payments.exclude(status__in=Payment.FAILURES).order_by("-id").first()
    return live or payments.order_by("-id").first()


def captured_payment_for_milestone(*, milestone_id) -> Payment | None:
    """The milestone's funding payment whose money the gateway holds (captured: completed or
    partly refunded), the latest if there were several; a system read for payouts and
    refunds, no visibility filter."""
    return (
        Payment.objects.filter(milestone_id=milestone_id, status__in=Payment.CAPTURED)
        .order_by("-id")
        .first()
    )


def payouts_for_user(*, user) -> QuerySet[Payout]:
    """The payouts the user may see, newest first: their own (the payee's), those of a
    milestone in a project they are the homeowner of (whether the contractor was paid), and
    all of them for operators."""
    if user is None or not user.is_authenticated:
        return Payout.objects.none()
    payouts = Payout.objects.all()
    if not user.is_staff:
        payouts = payouts.filter(Q(payee=user) | Q(milestone__project__homeowner=user))
    return payouts.order_by("-id")


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
