from celery import shared_task

from realtime.publishing import publish_unpublished


@shared_task(name="realtime.events_publish_unpublished", queue="default")
def events_publish_unpublished_task() -> int:
    return publish_unpublished()
