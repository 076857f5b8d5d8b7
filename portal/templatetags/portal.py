"""Display helpers for the portal's templates: money, statuses, event descriptions."""

from django import template

from common.money import CURRENCY_EXPONENTS, format_amount
from portal import presenters

register = template.Library()


@register.filter
def money(amount, currency) -> str:
    """`{{ amount|money:currency }}` → "2,500.00 USD" (amounts are integers in minor units)."""
    if amount is None or not currency:
        return "—"
    return format_amount(int(amount), str(currency))


@register.filter
def exponent(currency) -> int:
    """Decimal places of a currency, for the live client's formatting."""
    return CURRENCY_EXPONENTS.get(str(currency), 2)


@register.filter
def status_label(status) -> str:
    return presenters.STATUS_LABELS.get(str(status), str(status).replace("_", " "))


@register.filter
def event_summary(event, viewer=None) -> str:
    """`{{ event|event_summary:user }}`: the event told for the person reading the page."""
    return presenters.event_summary(event.type, event.data or {}, viewer)


@register.simple_tag
def unread_notifications(user) -> int:
    """The unread count for the navigation (0 while the notifications app is not there)."""
    if not getattr(user, "is_authenticated", False):
        return 0
    try:
        from realtime.selectors import notification_unread_count
    except ImportError:
        return 0
    return notification_unread_count(user=user)


@register.filter
def countdown(moment) -> str:
    """ "in 3 days", "today", "2 days overdue" for a date; hours and minutes for a datetime.
    static/js/live.js keeps the same wording up to date in the browser."""
    return presenters.countdown_text(moment)
