"""Celery tasks of realtime: doors that take ids and call one service."""

from celery import shared_task
from django.conf import settings

from realtime.publishing import publish_unpublished
from realtime.services import dispatch, notifications, retention, webhooks


@shared_task(name="realtime.events_publish_unpublished", queue="default")
def events_publish_unpublished_task() -> int:
    return publish_unpublished()


@shared_task(name="realtime.events_dispatch", queue="default", acks_late=True)
def events_dispatch_task(event_ids: list[int]) -> int:
    return dispatch.events_dispatch(event_ids=event_ids)


@shared_task(name="realtime.events_dispatch_undispatched", queue="default")
def events_dispatch_undispatched_task() -> int:
    return dispatch.events_dispatch_undispatched()


@shared_task(name="realtime.events_prune_replay_index", queue="default")
def events_prune_replay_index_task() -> int:
    return retention.events_prune_replay_index()


@shared_task(
    name="realtime.notification_email_send",
    queue="default",
    acks_late=True,
    autoretry_for=(OSError,),
    retry_backoff=30,
    max_retries=5,
)
def notification_email_send_task(notification_id: int) -> bool:
    return notifications.notification_email_send(notification_id=notification_id)


@shared_task(
    name="realtime.webhook_delivery_attempt",
    queue="webhooks",
    acks_late=True,
    soft_time_limit=settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 10,
    time_limit=settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 20,
)
def webhook_delivery_attempt_task(delivery_id: int) -> None:
    # Failures are not task retries: the next attempt's due time is stored on the delivery.
    webhooks.webhook_delivery_attempt(delivery_id=delivery_id)


@shared_task(name="realtime.webhook_deliveries_enqueue_due", queue="webhooks")
def webhook_deliveries_enqueue_due_task() -> int:
    return webhooks.webhook_deliveries_enqueue_due()
