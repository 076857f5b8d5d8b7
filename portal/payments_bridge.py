"""The portal's one door to the payments app: saved methods, funding, payments, timelines.

Reads go through payments.selectors (payer, payee and operators only); writes through
payments.services, the same ones the REST API calls."""

from urllib.parse import urlencode

from django.conf import settings

from payments import selectors, services
from payments.models import Payment, PaymentMethod, Payout
from realtime import selectors as realtime_selectors

SANDBOX_TOKENS = [
    ("pm_card_visa", "Visa •••• 4242 (succeeds)"),
    ("pm_card_mastercard", "Mastercard •••• 4444 (succeeds)"),
    (
        "pm_card_authenticationRequired",
        "Visa •••• 3184 (asks for 3-D Secure, which you pass or fail)",
    ),
    ("pm_card_chargeDeclined", "Visa •••• 0002 (is declined when charged)"),
    ("pm_card_chargeDeclinedInsufficientFunds", "Visa •••• 9995 (insufficient funds)"),
]


def stripe_publishable_key() -> str:
    """Stripe Elements only when the Stripe gateway is configured with a publishable key."""
    if settings.PAYMENT_GATEWAY != "stripe":
        return ""
    return getattr(settings, "STRIPE_PUBLISHABLE_KEY", "") or ""


def payment_methods_for_user(*, user) -> list[PaymentMethod]:
    return list(selectors.payment_method_list_for_user(user=user).order_by("-is_default", "-id"))


def usable_payment_methods(*, user) -> list[PaymentMethod]:
    return [
        method
        for method in payment_methods_for_user(user=user)
        if method.status == PaymentMethod.Status.VERIFIED
    ]


def payments_by_milestone(*, user, milestone_ids) -> dict[int, list[Payment]]:
    result: dict[int, list[Payment]] = {}
    payments = selectors.payment_list_for_user(user=user).filter(
        milestone_id__in=list(milestone_ids)
    )
    for payment in payments.order_by("id"):
        result.setdefault(payment.milestone_id, []).append(payment)
    return result


def open_payments_for_user(*, user, limit: int = 20) -> list[Payment]:
    """Payments still on their way (initiated … authorized), newest first."""
    return list(
        selectors.payment_list_for_user(user=user)
        .filter(status__in=list(Payment.OPEN))
        .select_related("milestone")[:limit]
    )


def payment_get_for_user(*, user, payment_id) -> Payment:
    """Raises PaymentNotFound (a NotFound) for payments the user may not see."""
    return selectors.payment_get_for_user(user=user, payment_id=payment_id)


def payment_challenge(*, user, payment: Payment, return_url: str) -> dict | None:
    """The 3-D Secure step the payer must take, for the portal: `{type, client_secret, url,
    stripe_key}` (url: the sandbox's or bank's page to visit, coming back to `return_url`;
    use_stripe_sdk: completed in the page by Stripe.js). None for anyone but the payer and for
    payments that are not verifying (payments.selectors decides)."""
    action = selectors.payment_next_action_for(user=user, payment=payment)
    if action is None:
        return None
    url = action.get("redirect_url", "")
    if url:
        url = f"{url}{'&' if '?' in url else '?'}{urlencode({'return_url': return_url})}"
    return {
        "type": action["type"],
        "client_secret": action["client_secret"],
        "url": url,
        "stripe_key": stripe_publishable_key(),
    }


def payment_timeline(*, user, payment_id) -> list:
    return realtime_selectors.payment_timeline_for_user(user=user, payment_id=payment_id)


def milestone_fund(*, user, milestone_id: int, payment_method_id: int) -> Payment:
    return services.payment_fund(
        milestone_id=milestone_id, payment_method_id=payment_method_id, actor=user
    )


def payment_method_add(*, user, token: str) -> PaymentMethod:
    return services.payment_method_create(user=user, token=token)


def payment_method_set_default(*, user, payment_method_id: int) -> PaymentMethod:
    return services.payment_method_set_default(user=user, payment_method_id=payment_method_id)


def payment_method_remove(*, user, payment_method_id: int) -> PaymentMethod:
    return services.payment_method_remove(user=user, payment_method_id=payment_method_id)


def payouts_by_milestone(*, user, milestone_ids) -> dict[int, Payout]:
    """The latest payout of each milestone (a failed or reversed one may have been paid
    again by a newer one), of those the user may see (payments.selectors)."""
    payouts = selectors.payouts_for_user(user=user).filter(milestone_id__in=list(milestone_ids))
    return {payout.milestone_id: payout for payout in payouts.order_by("pk")}
