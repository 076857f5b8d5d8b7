"""Outgoing webhooks: the endpoint API, Standard Webhooks signing, the per-resource sequence,
the retry schedule kept in the database, disabling with a notification, resend, rotation."""

import base64
import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import TestCase
from django.utils import timezone

from realtime.events import emit
from realtime.models import Notification, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from realtime.services import webhooks as services
from realtime.services.dispatch import events_dispatch
from tests.realtime.receiver import Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    receiver = Receiver()
    yield receiver
    receiver.close()


def committed_event(user, type="payment.failed", aggregate=("payment", 41), data=None):
    """Emit; its after-commit work (sequence, publish, dispatch, first attempts) runs as on a
    commit. Returns the stored event, with its position (public id)."""
    with after_commit(), transaction.atomic():
        event = emit(
            type,
            data or {"payment_id": 41, "amount": 1000, "currency": "usd", "status": "failed"},
            aggregate=aggregate,
            audience=[user],
            channels=[f"user.{user.pk}.payments"],
        )
    event.refresh_from_db()
    return event


def after_commit():
    return TestCase.captureOnCommitCallbacks(execute=True)


def verify(secret: str, headers: dict, body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return expected in headers["webhook-signature"].split(" ")


def make_due(delivery: WebhookDelivery) -> None:
    """Time passes: the stored due time is now in the past."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1), enqueued_at=None
    )


# --- the endpoint API ------------------------------------------------------------------------


def test_create_endpoint_returns_201_with_a_secret(homeowner, receiver):
    response = homeowner.post(
        "/api/v1/webhook-endpoints",
        {"url": receiver.url, "events": ["payment.*", "milestone.released"]},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) >= {"id", "url", "events", "secret"}
    assert body["url"] == receiver.url
    assert body["events"] == ["payment.*", "milestone.released"]
    assert body["secret"].startswith("whsec_")
    assert WebhookEndpoint.objects.get(pk=body["id"]).owner == homeowner.user


def test_a_private_address_is_refused_unless_allowed(homeowner, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False

    for url in [
        "http://127.0.0.1:9/x",
        "http://10.1.2.3/x",
        "http://[::1]/x",
        "ftp://example.com/x",
    ]:
        response = homeowner.post(
            "/api/v1/webhook-endpoints", {"url": url, "events": ["*"]}, format="json"
        )
        assert response.status_code == 400, url
        assert response.json()["error"]["field"] == "url"
    assert not WebhookEndpoint.objects.exists()


def test_list_update_delete_are_limited_to_the_owner(homeowner, stranger, receiver):
    endpoint = services.webhook_endpoint_create(
        owner=homeowner.user, url=receiver.url, events=["*"]
    )

    assert [e["id"] for e in homeowner.get("/api/v1/webhook-endpoints").json()["results"]] == [
        endpoint.pk
    ]
    assert stranger.get("/api/v1/webhook-endpoints").json()["results"] == []
    assert stranger.get(f"/api/v1/webhook-endpoints/{endpoint.pk}").status_code == 404
    assert (
        stranger.patch(
            f"/api/v1/webhook-endpoints/{endpoint.pk}", {"events": ["x"]}, format="json"
        ).status_code
        == 404
    )
    assert stranger.delete(f"/api/v1/webhook-endpoints/{endpoint.pk}").status_code == 404
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).events == ["*"]

    patched = homeowner.patch(
        f"/api/v1/webhook-endpoints/{endpoint.pk}", {"events": ["payment.failed"]}, format="json"
    )
    assert patched.status_code == 200
    assert patched.json()["events"] == ["payment.failed"]
    assert "secret" not in patched.json()
    assert homeowner.delete(f"/api/v1/webhook-endpoints/{endpoint.pk}").status_code == 204
    assert not WebhookEndpoint.objects.exists()


# --- deliveries --------------------------------------------------------------------------------


def test_a_delivery_is_signed_standard_webhooks_style_and_carries_id_and_sequence(
    homeowner, receiver
):
    endpoint = services.webhook_endpoint_create(
        owner=homeowner.user, url=receiver.url, events=["payment.*"]
    )

    first = committed_event(homeowner.user)
    second = committed_event(homeowner.user, type="payment.refunded")

    assert len(receiver.requests) == 2
    request = receiver.requests[1]
    headers = {name.lower(): value for name, value in request["headers"].items()}
    payload = json.loads(request["body"])
    assert headers["webhook-id"] == f"evt_{second.position}"
    assert verify(endpoint.secret, headers, request["body"])
    assert not verify("whsec_" + base64.b64encode(b"x" * 32).decode(), headers, request["body"])
    assert payload["id"] == second.position
    assert payload["type"] == "payment.refunded"
    assert payload["resource"] == {"type": "payment", "id": "41"}
    assert [json.loads(r["body"])["sequence"] for r in receiver.requests] == [1, 2]
    assert first.sequence == 1
    delivery = WebhookDelivery.objects.get(event=second)
    assert delivery.status == "succeeded"
    assert WebhookAttempt.objects.get(delivery=delivery).status_code == 200


def test_only_events_the_owner_may_see_and_the_filter_accepts_are_delivered(
    homeowner, stranger, operator, receiver
):
    services.webhook_endpoint_create(owner=homeowner.user, url=receiver.url, events=["milestone.*"])
    services.webhook_endpoint_create(owner=stranger.user, url=receiver.url, events=["*"])
    operator_endpoint = services.webhook_endpoint_create(
        owner=operator.user, url=receiver.url, events=["*"]
    )

    event = committed_event(homeowner.user, type="payment.failed")

    assert list(WebhookDelivery.objects.values_list("endpoint_id", "event_id")) == [
        (operator_endpoint.pk, event.position)
    ]


def test_dispatching_twice_creates_one_delivery(homeowner, receiver):
    services.webhook_endpoint_create(owner=homeowner.user, url=receiver.url, events=["*"])
    event = committed_event(homeowner.user)

    events_dispatch(event_ids=[event.position])
    services.webhook_delivery_attempt(delivery_id=WebhookDelivery.objects.get().pk)

    assert WebhookDelivery.objects.count() == 1
    assert WebhookAttempt.objects.count() == 1
    assert len(receiver.requests) == 1


def test_failures_follow_the_retry_schedule_from_the_database_then_disable_and_notify(
    homeowner, receiver
):
    endpoint = services.webhook_endpoint_create(
        owner=homeowner.user, url=receiver.url, events=["*"]
    )
    receiver.statuses = [500] * 20
    committed_event(homeowner.user)
    delivery = WebhookDelivery.objects.get()
    waits = []

    for _ in range(7):
        delivery.refresh_from_db()
        waits.append(round((delivery.next_attempt_at - delivery.last_attempt_at).total_seconds()))
        make_due(delivery)
        assert services.webhook_deliveries_enqueue_due() == 1  # the beat picker queues it

    delivery.refresh_from_db()
    endpoint.refresh_from_db()
    assert waits == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert sum(waits) / 3600 > 24
    assert delivery.status == "failed"
    assert delivery.attempts == 8
    assert len(receiver.requests) == 8
    assert [a.status_code for a in delivery.attempt_log.all()] == [500] * 8
    assert endpoint.is_active is False
    assert "8 failed attempts" in endpoint.disabled_reason
    notification = Notification.objects.get(user=homeowner.user, kind="webhook_endpoint_disabled")
    assert endpoint.url in notification.body
    # A disabled endpoint gets nothing new.
    committed_event(homeowner.user)
    assert WebhookDelivery.objects.count() == 1


def test_a_delivery_that_is_not_due_is_not_attempted(homeowner, receiver):
    services.webhook_endpoint_create(owner=homeowner.user, url=receiver.url, events=["*"])
    receiver.statuses = [503]
    committed_event(homeowner.user)
    delivery = WebhookDelivery.objects.get()

    assert services.webhook_deliveries_enqueue_due() == 0
    services.webhook_delivery_attempt(delivery_id=delivery.pk)  # a duplicate task message

    delivery.refresh_from_db()
    assert delivery.attempts == 1
    assert delivery.status == "pending"
    assert len(receiver.requests) == 1


def test_an_endpoint_that_recovers_is_not_disabled(homeowner, receiver):
    endpoint = services.webhook_endpoint_create(
        owner=homeowner.user, url=receiver.url, events=["*"]
    )
    receiver.statuses = [500, 500, 200]
    committed_event(homeowner.user)
    delivery = WebhookDelivery.objects.get()
    for _ in range(2):
        make_due(delivery)
        services.webhook_deliveries_enqueue_due()

    delivery.refresh_from_db()
    endpoint.refresh_from_db()
    assert delivery.status == "succeeded"
    assert delivery.attempts == 3
    assert endpoint.is_active is True
    assert endpoint.consecutive_failures == 0


def test_manual_resend_delivers_again(homeowner, receiver):
    endpoint = services.webhook_endpoint_create(
        owner=homeowner.user, url=receiver.url, events=["*"]
    )
    committed_event(homeowner.user)
    delivery = WebhookDelivery.objects.get()

    with after_commit():
        response = homeowner.post(
            f"/api/v1/webhook-endpoints/{endpoint.pk}/deliveries/{delivery.pk}/resend"
        )

    assert response.status_code == 202
    assert len(receiver.requests) == 2
    assert (
        receiver.requests[0]["headers"]["webhook-id"]
        == receiver.requests[1]["headers"]["webhook-id"]
    )
    log = homeowner.get(f"/api/v1/webhook-endpoints/{endpoint.pk}/deliveries").json()["results"]
    assert [a["number"] for a in log[0]["attempt_log"]] == [1, 2]
    assert log[0]["status"] == "succeeded"


def test_resend_of_another_owners_delivery_is_404(homeowner, stranger, receiver):
    endpoint = services.webhook_endpoint_create(
        owner=homeowner.user, url=receiver.url, events=["*"]
    )
    committed_event(homeowner.user)
    delivery = WebhookDelivery.objects.get()

    response = stranger.post(
        f"/api/v1/webhook-endpoints/{endpoint.pk}/deliveries/{delivery.pk}/resend"
    )

    assert response.status_code == 404
    assert len(receiver.requests) == 1


def test_rotation_signs_with_both_secrets_during_the_overlap(homeowner, receiver):
    endpoint = services.webhook_endpoint_create(
        owner=homeowner.user, url=receiver.url, events=["*"]
    )
    old_secret = endpoint.secret

    response = homeowner.post(f"/api/v1/webhook-endpoints/{endpoint.pk}/rotate-secret")
    committed_event(homeowner.user)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        previous_secret_expires_at=timezone.now() - timedelta(seconds=1)
    )
    committed_event(homeowner.user)

    new_secret = response.json()["secret"]
    assert new_secret != old_secret
    during, after = receiver.requests
    headers = {k.lower(): v for k, v in during["headers"].items()}
    assert verify(new_secret, headers, during["body"])
    assert verify(old_secret, headers, during["body"])
    headers = {k.lower(): v for k, v in after["headers"].items()}
    assert verify(new_secret, headers, after["body"])
    assert not verify(old_secret, headers, after["body"])


def test_a_target_that_became_private_is_not_called(homeowner, receiver, settings):
    services.webhook_endpoint_create(owner=homeowner.user, url=receiver.url, events=["*"])
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False

    committed_event(homeowner.user)

    delivery = WebhookDelivery.objects.get()
    assert receiver.requests == []
    assert delivery.status == "pending"
    assert "public address" in delivery.last_error


def test_a_name_that_does_not_resolve_yet_is_accepted_but_never_called(homeowner, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False

    response = homeowner.post(
        "/api/v1/webhook-endpoints",
        {"url": "https://hooks.invalid/receive", "events": ["*"]},
        format="json",
    )
    committed_event(homeowner.user)

    assert response.status_code == 201
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "pending"
    assert WebhookAttempt.objects.get().status_code is None
    assert "does not resolve" in delivery.last_error
