from celery import shared_task

from escrow import services


@shared_task(name="escrow.milestone_auto_release_due", queue="default")
def milestone_auto_release_due_task() -> int:
    """Beat: release submitted milestones whose review window passed (bounded batch)."""
    return len(services.milestone_auto_release_due())
