"""System checks of our own settings (`manage.py check --deploy`)."""

from django.conf import settings
from django.core.checks import Warning, register


@register("email", deploy=True)
def email_backend_check(app_configs, **kwargs):
    """Production mode without EMAIL_URL has no backend that delivers e-mail: notification
    e-mails are then marked failed, never sent (realtime.services.notifications)."""
    if settings.DEBUG or settings.EMAIL_DELIVERY_CONFIGURED:
        return []
    return [
        Warning(
            "No e-mail backend is configured: notification e-mails are not sent (they are "
            f"marked failed), and {settings.EMAIL_BACKEND} keeps or drops anything else.",
            hint="Set EMAIL_URL, e.g. smtp+tls://user:password@mail.example.com:587.",
            id="escrowpay.W005",
        )
    ]
