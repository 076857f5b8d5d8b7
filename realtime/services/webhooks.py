"""Outgoing webhooks: endpoints, deliveries derived from events, attempts on a schedule."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from realtime import webhook_http
from realtime.exceptions import (
    WebhookDeliveryFinished,
    WebhookDeliveryNotFound,
    WebhookEndpointDisabled,
    WebhookEndpointNotFound,
)
from realtime.models import Event, Notification, WebhookAttempt, WebhookDelivery, WebhookEndpoint

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)


def retry_delays() -> list[int]:
    """Seconds to wait after failed attempt 1, 2, ...; its length + 1 is the attempt limit."""
    return list(settings.WEBHOOK_RETRY_DELAYS_SECONDS)


def max_attempts() -> int:
    return len(retry_delays()) + 1


def _endpoints_of(owner):
    endpoints = WebhookEndpoint.objects.all()
    return endpoints if owner.is_staff else endpoints.filter(owner=owner)


def _endpoint_for_update(*, endpoint_id: int, owner) -> WebhookEndpoint:
    endpoint = _endpoints_of(owner).select_for_update(of=("self",)).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise WebhookEndpointNotFound()
    return endpoint


def _check_target(url: str, *, must_resolve: bool = True) -> None:
    webhook_http.target_check(
        url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_TARGETS, must_resolve=must_resolve
    )


def webhook_endpoint_create(
    *, owner, url: str, events: list[str], description: str = ""
) -> WebhookEndpoint:
    """Register an endpoint for the owner's events (all events for operators).

    Raises WebhookTargetRefused for a non-http(s) or non-public URL (unless
    WEBHOOK_ALLOW_PRIVATE_TARGETS). The secret is generated here and shown to the owner."""
    _check_target(url, must_resolve=False)
    return WebhookEndpoint.objects.create(
        owner=owner,
        url=url,
        events=list(dict.fromkeys(events)),
        description=description,
        secret=webhook_http.secret_generate(),
    )


def webhook_endpoint_update(
    *,
    endpoint_id: int,
    owner,
    url: str | None = None,
    events: list[str] | None = None,
    description: str | None = None,
    is_active: bool | None = None,
) -> WebhookEndpoint:
    """Change an endpoint. Re-enabling one clears its failure count; deliveries still pending
    resume on their schedule. Raises WebhookEndpointNotFound, WebhookTargetRefused."""
    if url is not None:
        _check_target(url, must_resolve=False)
    with transaction.atomic(durable=True):
        endpoint = _endpoint_for_update(endpoint_id=endpoint_id, owner=owner)
        if url is not None:
            endpoint.url = url
        if events is not None:
            endpoint.events = list(dict.fromkeys(events))
        if description is not None:
            endpoint.description = description
        if is_active is True and not endpoint.is_active:
            endpoint.is_active = True
            endpoint.disabled_at = None
            endpoint.disabled_reason = ""
            endpoint.consecutive_failures = 0
        elif is_active is False and endpoint.is_active:
            endpoint.is_active = False
            endpoint.disabled_at = timezone.now()
            endpoint.disabled_reason = "disabled by its owner"
        endpoint.save()
    return endpoint


def webhook_endpoint_delete(*, endpoint_id: int, owner) -> None:
    """Delete an endpoint with its delivery log. Raises WebhookEndpointNotFound."""
    deleted, _ = _endpoints_of(owner).filter(pk=endpoint_id).delete()
    if not deleted:
        raise WebhookEndpointNotFound()


def webhook_endpoint_rotate_secret(
    *, endpoint_id: int, owner, overlap: timedelta | None = None
) -> WebhookEndpoint:
    """Give the endpoint a new secret; the old one keeps signing too (a second signature)
    for `overlap` (WEBHOOK_SECRET_ROTATION_OVERLAP by default) so receivers can switch
    without dropping deliveries. Raises WebhookEndpointNotFound."""
    overlap = overlap if overlap is not None else settings.WEBHOOK_SECRET_ROTATION_OVERLAP
    with transaction.atomic(durable=True):
        endpoint = _endpoint_for_update(endpoint_id=endpoint_id, owner=owner)
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = timezone.now() + overlap
        endpoint.secret = webhook_http.secret_generate()
        endpoint.save()
    return endpoint


def _signing_secrets(endpoint: WebhookEndpoint, now) -> list[str]:
    result = [endpoint.secret]
    if (
        endpoint.previous_secret
        and endpoint.previous_secret_expires_at
        and endpoint.previous_secret_expires_at > now
    ):
        result.append(endpoint.previous_secret)
    return result


def webhook_deliveries_create_for_event(*, event: Event) -> list[WebhookDelivery]:
    """One delivery per active endpoint whose owner may see the event (operators: all) and
    whose filter accepts its type. Idempotent (unique per endpoint and event). Joins the
    caller's transaction; the first attempts are queued after it commits."""
    audience = [int(user_id) for user_id in event.audience]
    endpoints = WebhookEndpoint.objects.filter(is_active=True).filter(
        Q(owner_id__in=audience) | Q(owner__is_staff=True)
    )
    now = timezone.now()
    created = []
    for endpoint in endpoints:
        if not endpoint.accepts(event.type):
            continue
        try:
            with transaction.atomic():
                delivery = WebhookDelivery.objects.create(
                    endpoint=endpoint, event=event, next_attempt_at=now, enqueued_at=now
                )
        except IntegrityError:
            continue
        created.append(delivery)
    if created:
        ids = [delivery.pk for delivery in created]
        transaction.on_commit(lambda: _enqueue_attempts(ids))
    return created


def _enqueue_attempts(delivery_ids: list[int]) -> None:
    from realtime.tasks import webhook_delivery_attempt_task

    for delivery_id in delivery_ids:
        webhook_delivery_attempt_task.delay(delivery_id)


def webhook_deliveries_enqueue_due(*, limit: int = 500) -> int:
    """The beat picker: queue an attempt for every due delivery of an active endpoint that
    was not queued recently. The due time is in the database, so nothing depends on a broker
    countdown surviving a restart."""
    now = timezone.now()
    requeue_before = now - settings.WEBHOOK_REQUEUE_AFTER
    ids = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING,
            next_attempt_at__lte=now,
            endpoint__is_active=True,
        )
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=requeue_before))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    if ids:
        WebhookDelivery.objects.filter(pk__in=ids).update(enqueued_at=now)
        _enqueue_attempts(ids)
    return len(ids)


def webhook_delivery_attempt(*, delivery_id: int) -> WebhookDelivery | None:
    """Make one attempt if the delivery is due: claim it, POST outside any transaction,
    record the attempt, then schedule the next one, finish, or give up.

    Idempotent with respect to duplicate task messages: the claim moves `next_attempt_at`
    past the attempt's lease, so a second message finds it not due and does nothing. A
    delivery that exhausts its attempts while its endpoint has not succeeded since the
    delivery was created disables the endpoint and notifies its owner."""
    now = timezone.now()
    lease = timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 60)
    with transaction.atomic(durable=True):
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",))
            .select_related("endpoint", "event")
            .filter(pk=delivery_id)
            .first()
        )
        if (
            delivery is None
            or delivery.status != WebhookDelivery.Status.PENDING
            or not delivery.endpoint.is_active
            or (delivery.next_attempt_at is not None and delivery.next_attempt_at > now)
        ):
            return delivery
        delivery.attempts += 1
        delivery.next_attempt_at = now + lease
        delivery.last_attempt_at = now
        delivery.save(update_fields=["attempts", "next_attempt_at", "last_attempt_at"])
    number = delivery.attempts
    endpoint, event = delivery.endpoint, delivery.event

    result = _post(endpoint=endpoint, event=event, number=number)

    with transaction.atomic(durable=True):
        endpoint = WebhookEndpoint.objects.select_for_update(of=("self",)).get(pk=endpoint.pk)
        delivery = WebhookDelivery.objects.select_for_update(of=("self",)).get(pk=delivery.pk)
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=number,
            started_at=now,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            error=result.error[:300],
            response_excerpt=result.response_excerpt[:500],
            is_success=result.is_success,
        )
        delivery.last_status_code = result.status_code
        delivery.last_error = result.error[:300]
        finished = timezone.now()
        if result.is_success:
            delivery.status = WebhookDelivery.Status.SUCCEEDED
            delivery.succeeded_at = finished
            delivery.next_attempt_at = None
            endpoint.consecutive_failures = 0
            endpoint.last_success_at = finished
        else:
            endpoint.consecutive_failures += 1
            if number >= max_attempts():
                delivery.status = WebhookDelivery.Status.FAILED
                delivery.next_attempt_at = None
                if endpoint.is_active and (
                    endpoint.last_success_at is None
                    or endpoint.last_success_at < delivery.created_at
                ):
                    _endpoint_disable(endpoint, reason=f"{number} failed attempts, no success")
            else:
                delay = retry_delays()[min(number - 1, len(retry_delays()) - 1)]
                delivery.next_attempt_at = finished + timedelta(seconds=delay)
        delivery.save()
        endpoint.save(
            update_fields=[
                "consecutive_failures",
                "last_success_at",
                "is_active",
                "disabled_at",
                "disabled_reason",
                "updated_at",
            ]
        )
    return delivery


def _post(*, endpoint: WebhookEndpoint, event: Event, number: int) -> webhook_http.PostResult:
    from realtime.exceptions import WebhookTargetRefused

    try:
        _check_target(endpoint.url)
    except WebhookTargetRefused as exc:
        return webhook_http.PostResult(None, exc.message, "", 0)
    body = webhook_http.payload(event)
    headers = webhook_http.signed_headers(
        secrets_=_signing_secrets(endpoint, timezone.now()),
        message_id=webhook_http.message_id(event),
        timestamp=int(time.time()),
        body=body,
    )
    headers["webhook-attempt"] = str(number)
    return webhook_http.post(
        url=endpoint.url, body=body, headers=headers, timeout=settings.WEBHOOK_TIMEOUT_SECONDS
    )


def _endpoint_disable(endpoint: WebhookEndpoint, *, reason: str) -> None:
    """Caller holds the endpoint's row lock. Tells the owner (in-app and e-mail)."""
    from realtime.services.notifications import notification_create

    endpoint.is_active = False
    endpoint.disabled_at = timezone.now()
    endpoint.disabled_reason = reason[:200]
    notification_create(
        user_id=endpoint.owner_id,
        kind=Notification.Kind.WEBHOOK_ENDPOINT_DISABLED,
        key=f"webhook_endpoint:{endpoint.pk}:disabled:{int(endpoint.disabled_at.timestamp())}",
        title="A webhook endpoint was disabled",
        body=f"{endpoint.url} kept failing ({reason}). Fix it, then re-enable it.",
    )
    logger.warning(
        "webhook endpoint disabled", extra={"endpoint_id": endpoint.pk, "reason": reason}
    )


def webhook_delivery_resend(*, endpoint_id: int, delivery_id: int, owner) -> WebhookDelivery:
    """Attempt a delivery again now, whatever its state (the same webhook-id, so receivers
    dedupe). One that had used up its attempts gets exactly one more; one that had not keeps
    the rest of its schedule if this attempt fails. Raises WebhookDeliveryNotFound,
    WebhookEndpointDisabled."""
    with transaction.atomic(durable=True):
        endpoint = _endpoint_for_update(endpoint_id=endpoint_id, owner=owner)
        if not endpoint.is_active:
            raise WebhookEndpointDisabled()
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",))
            .filter(pk=delivery_id, endpoint=endpoint)
            .first()
        )
        if delivery is None:
            raise WebhookDeliveryNotFound()
        now = timezone.now()
        delivery.status = WebhookDelivery.Status.PENDING
        delivery.next_attempt_at = now
        delivery.enqueued_at = now
        delivery.save(update_fields=["status", "next_attempt_at", "enqueued_at"])
        transaction.on_commit(lambda: _enqueue_attempts([delivery.pk]))
    return delivery


def webhook_delivery_cancel(*, delivery_id: int, actor: User) -> WebhookDelivery:
    """An operator gives up on a pending delivery: no further attempt is made (it becomes
    failed, `last_error` says who cancelled it). Idempotent for a failed delivery; an attempt
    already in flight still records its outcome. Caller: an operator (the admin's action);
    anyone else gets WebhookDeliveryNotFound. Raises WebhookDeliveryFinished for a delivery
    that succeeded. Resend (webhook_delivery_resend) brings a failed one back."""
    if not actor.is_staff:
        raise WebhookDeliveryNotFound()
    with transaction.atomic(durable=True):
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",)).filter(pk=delivery_id).first()
        )
        if delivery is None:
            raise WebhookDeliveryNotFound()
        if delivery.status == WebhookDelivery.Status.FAILED:
            return delivery
        if delivery.status == WebhookDelivery.Status.SUCCEEDED:
            raise WebhookDeliveryFinished(f"Delivery {delivery.pk} already succeeded.")
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.next_attempt_at = None
        delivery.last_error = f"cancelled by operator {actor.get_username()}"[:300]
        delivery.save(update_fields=["status", "next_attempt_at", "last_error"])
    logger.info(
        "webhook delivery cancelled", extra={"delivery_id": delivery.pk, "actor_id": actor.pk}
    )
    return delivery
