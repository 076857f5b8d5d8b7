from celery import shared_task

from common.api.idempotency import prune_expired


@shared_task(name="common.idempotency_prune", queue="default")
def idempotency_prune_task() -> int:
    return prune_expired()
