"""The realtime admin writes only through services: the endpoint form through
webhook_endpoint_update (the API's URL target check, re-enabling clears failures), deliveries
through the resend and cancel actions; deliveries' and notifications' forms are read-only."""

import pytest
from django.test import Client
from django.utils import timezone

from realtime.events import emit
from realtime.models import Event, Notification, WebhookDelivery, WebhookEndpoint
from realtime.services import webhooks as services
from tests.factories import OperatorFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client():
    client = Client()
    client.force_login(OperatorFactory())
    return client


@pytest.fixture
def endpoint(homeowner, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    return services.webhook_endpoint_create(
        owner=homeowner.user, url="https://hooks.invalid/receive", events=["*"]
    )


def endpoint_form(endpoint, **values):
    data = {"url": endpoint.url, "description": endpoint.description}
    if endpoint.is_active:
        data["is_active"] = "on"
    data.update(values)
    return {key: value for key, value in data.items() if value is not None}


def a_delivery(endpoint, status="pending", **values) -> WebhookDelivery:
    emit(
        "payment.failed",
        {"payment_id": 41, "amount": 1000, "currency": "usd", "status": "failed"},
        aggregate=("payment", 41),
        audience=[endpoint.owner_id],
        channels=[f"user.{endpoint.owner_id}.payments"],
    )
    event = Event.objects.latest("id")
    if event.position is None:
        Event.objects.filter(pk=event.pk).update(position=event.pk)
        event.refresh_from_db()
    return WebhookDelivery.objects.create(endpoint=endpoint, event=event, status=status, **values)


def test_a_private_url_is_refused_in_the_admin_as_in_the_api(admin_client, endpoint):
    response = admin_client.post(
        f"/admin/realtime/webhookendpoint/{endpoint.pk}/change/",
        endpoint_form(endpoint, url="http://127.0.0.1:9/steal"),
        follow=True,
    )

    assert response.status_code == 200
    assert "public address" in response.content.decode()
    endpoint.refresh_from_db()
    assert endpoint.url == "https://hooks.invalid/receive"


def test_reenabling_an_endpoint_in_the_admin_clears_its_failures(admin_client, endpoint):
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        is_active=False,
        consecutive_failures=9,
        disabled_at=timezone.now(),
        disabled_reason="9 failed attempts, no success",
    )
    endpoint.refresh_from_db()

    response = admin_client.post(
        f"/admin/realtime/webhookendpoint/{endpoint.pk}/change/",
        endpoint_form(endpoint, is_active="on"),
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    endpoint.refresh_from_db()
    assert endpoint.is_active
    assert (endpoint.consecutive_failures, endpoint.disabled_at, endpoint.disabled_reason) == (
        0,
        None,
        "",
    )


def test_a_delivery_cannot_be_edited_in_the_admin(admin_client, endpoint):
    delivery = a_delivery(endpoint)

    response = admin_client.post(
        f"/admin/realtime/webhookdelivery/{delivery.pk}/change/",
        {"status": "succeeded", "next_attempt_at_0": "", "next_attempt_at_1": ""},
    )

    assert response.status_code == 403
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert (
        admin_client.get(f"/admin/realtime/webhookdelivery/{delivery.pk}/change/").status_code
        == 200
    )


def test_the_admin_cancels_a_pending_delivery_through_the_service(admin_client, endpoint):
    delivery = a_delivery(endpoint, next_attempt_at=timezone.now())

    response = admin_client.post(
        "/admin/realtime/webhookdelivery/",
        {"action": "cancel", "_selected_action": [delivery.pk]},
    )

    assert response.status_code == 302
    delivery.refresh_from_db()
    assert (delivery.status, delivery.next_attempt_at) == ("failed", None)
    assert delivery.last_error.startswith("cancelled by operator")


def test_a_succeeded_delivery_is_not_cancelled(admin_client, endpoint):
    delivery = a_delivery(endpoint, status="succeeded")

    response = admin_client.post(
        "/admin/realtime/webhookdelivery/",
        {"action": "cancel", "_selected_action": [delivery.pk]},
        follow=True,
    )

    assert "already succeeded" in response.content.decode()
    delivery.refresh_from_db()
    assert delivery.status == "succeeded"


def test_the_admin_resends_a_failed_delivery_through_the_service(admin_client, endpoint):
    delivery = a_delivery(endpoint, status="failed")

    response = admin_client.post(
        "/admin/realtime/webhookdelivery/",
        {"action": "resend", "_selected_action": [delivery.pk]},
    )

    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert delivery.next_attempt_at is not None


def test_a_notifications_email_status_cannot_be_edited_in_the_admin(admin_client, homeowner):
    notification = Notification.objects.create(
        user=homeowner.user, kind="payment_failed", key="k1", title="t", email_status="pending"
    )

    response = admin_client.post(
        f"/admin/realtime/notification/{notification.pk}/change/",
        {"user": homeowner.user.pk, "kind": "payment_failed", "title": "t", "email_status": "sent"},
    )

    assert response.status_code == 403
    notification.refresh_from_db()
    assert notification.email_status == "pending"
