from celery import shared_task

from billing import services


@shared_task(name="billing.payment_due_reminders_send", queue="default")
def payment_due_reminders_send_task() -> int:
    """Beat: remind homeowners of milestones due soon or overdue and not funded (bounded)."""
    return services.payment_due_reminders_send()
