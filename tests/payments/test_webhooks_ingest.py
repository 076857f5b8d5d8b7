"""POST /webhooks/<provider>/: 2xx once stored, duplicates 2xx with no second effect, and 400
with nothing stored for anything not signed correctly or not an event.

Every test runs twice: through the Django views (the test client) and through the lean ASGI
path that Daphne serves (config.asgi -> payments.ingest.asgi_app), which must answer alike."""

import time
from unittest import mock

import pytest

from payments.models import WebhookEvent
from tests.payments.helpers import AsgiClient, event_body, post_webhook, signed

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["django-view", "asgi-path"])
def anonymous(request):
    """The sender: Django's test client, or the ASGI application as Daphne calls it."""
    from rest_framework.test import APIClient

    return APIClient() if request.param == "django-view" else AsgiClient()


def unknown_event(event_id="evt_1"):
    return event_body(event_id, "customer.created", {"id": "cus_1", "object": "customer"})


def test_a_signed_event_is_stored_once_and_answered_2xx(anonymous):
    body = unknown_event()

    response = post_webhook(anonymous, body, signed(body))

    assert response.status_code == 200
    row = WebhookEvent.objects.get()
    assert (row.provider, row.event_id, row.type) == ("sandbox", "evt_1", "customer.created")
    assert row.status == "ignored"  # processed: a type we do not act on


def test_a_duplicate_is_2xx_and_not_stored_or_processed_again(anonymous):
    body = unknown_event()
    post_webhook(anonymous, body, signed(body))

    from payments import tasks

    with mock.patch.object(tasks.webhook_process_task, "apply_async") as enqueue:
        response = post_webhook(anonymous, body, signed(body))

    assert response.status_code == 200
    assert response.json()["duplicate"] is True
    assert WebhookEvent.objects.count() == 1
    enqueue.assert_not_called()


def test_the_same_event_id_from_another_provider_is_another_event(anonymous, settings):
    settings.STRIPE_WEBHOOK_SECRET = "whsec_stripe"
    body = unknown_event()

    post_webhook(anonymous, body, signed(body))
    post_webhook(anonymous, body, signed(body, "whsec_stripe"), provider="stripe")

    assert WebhookEvent.objects.count() == 2


def rejected(client, body, header, provider="sandbox"):
    response = post_webhook(client, body, header, provider)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "webhook_rejected"
    assert WebhookEvent.objects.count() == 0
    return response


def test_missing_signature_is_400_and_nothing_is_stored(anonymous):
    rejected(anonymous, unknown_event(), None)


def test_forged_signature_is_400_and_nothing_is_stored(anonymous):
    body = unknown_event()
    rejected(anonymous, body, signed(body, "whsec_forged"))


def test_signature_of_another_body_is_400(anonymous):
    rejected(anonymous, unknown_event("evt_2"), signed(unknown_event("evt_1")))


def test_stale_timestamp_is_400(anonymous):
    body = unknown_event()
    rejected(anonymous, body, signed(body, timestamp=int(time.time()) - 330))


def test_future_timestamp_is_400(anonymous):
    # Well past the boundary: the request takes time to arrive (the exact 300 s edges are
    # tested with a fixed clock in test_signatures.py).
    body = unknown_event()
    rejected(anonymous, body, signed(body, timestamp=int(time.time()) + 330))


def test_replay_of_an_old_delivery_is_400(anonymous):
    body = unknown_event()
    header = signed(body, timestamp=int(time.time()) - 3600)
    rejected(anonymous, body, header)


@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b'{"id":"evt_1"}', b""])
def test_a_signed_body_that_is_not_an_event_is_400(anonymous, body):
    rejected(anonymous, body, signed(body))


def test_an_oversized_body_is_400(anonymous, settings):
    settings.PAYMENTS_WEBHOOK_MAX_BYTES = 1024
    body = event_body("evt_big", "customer.created", {"id": "c", "pad": "x" * 2000})
    rejected(anonymous, body, signed(body))


def test_stripe_endpoint_without_a_secret_rejects_everything(anonymous, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    body = unknown_event()
    rejected(anonymous, body, signed(body, ""), provider="stripe")


def test_stripe_endpoint_accepts_its_secret_and_a_previous_one(anonymous, settings):
    settings.STRIPE_WEBHOOK_SECRET = "whsec_new"
    settings.STRIPE_WEBHOOK_SECRETS_PREVIOUS = ["whsec_old"]
    first, second = unknown_event("evt_a"), unknown_event("evt_b")

    assert post_webhook(anonymous, first, signed(first, "whsec_new"), "stripe").status_code == 200
    assert post_webhook(anonymous, second, signed(second, "whsec_old"), "stripe").status_code == 200
    assert WebhookEvent.objects.filter(provider="stripe").count() == 2


def test_the_sandbox_secret_does_not_open_the_stripe_endpoint(anonymous, settings):
    settings.STRIPE_WEBHOOK_SECRET = "whsec_stripe"
    body = unknown_event()
    rejected(anonymous, body, signed(body), provider="stripe")


def test_get_is_not_allowed(anonymous):
    response = anonymous.get("/webhooks/sandbox/")

    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert WebhookEvent.objects.count() == 0


def test_a_declared_oversized_body_is_400_before_it_is_read(settings):
    settings.PAYMENTS_WEBHOOK_MAX_BYTES = 1024
    body = unknown_event()

    response = AsgiClient().post(
        "/webhooks/sandbox/", body, CONTENT_LENGTH=10**9, HTTP_STRIPE_SIGNATURE=signed(body)
    )

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The body is too large."
    assert WebhookEvent.objects.count() == 0


def test_an_oversized_chunked_body_without_a_length_is_400(settings):
    """No Content-Length: the ASGI path stops buffering once the limit is passed."""
    settings.PAYMENTS_WEBHOOK_MAX_BYTES = 1024
    body = event_body("evt_big", "customer.created", {"id": "c", "pad": "x" * 5000})

    response = AsgiClient(chunk=512).post(
        "/webhooks/sandbox/", body, chunked=True, HTTP_STRIPE_SIGNATURE=signed(body)
    )

    assert response.status_code == 400
    assert WebhookEvent.objects.count() == 0


def test_a_chunked_body_under_the_limit_is_stored():
    body = unknown_event("evt_chunked")

    response = AsgiClient(chunk=16).post(
        "/webhooks/sandbox/", body, chunked=True, HTTP_STRIPE_SIGNATURE=signed(body)
    )

    assert response.status_code == 200, response.content
    assert WebhookEvent.objects.get().event_id == "evt_chunked"


def test_the_asgi_path_answers_500_and_stores_nothing_when_the_database_fails():
    body = unknown_event()

    with mock.patch("payments.services.webhooks._insert_sql", side_effect=RuntimeError("down")):
        response = AsgiClient().post("/webhooks/sandbox/", body, HTTP_STRIPE_SIGNATURE=signed(body))

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    assert WebhookEvent.objects.count() == 0


def test_other_paths_still_go_to_django():
    """Only the two exact webhook paths take the lean path; the rest is Django's."""
    response = AsgiClient().get("/healthz")

    assert response.status_code == 200
    assert response.headers.get("x-frame-options") == "DENY"  # Django's middleware ran


def test_under_asgi_webhooks_never_enter_the_django_request_cycle():
    """The lean path is what Daphne serves (bench/webhooks.py measures it): a delivery is
    stored without Django's handler, middleware or URL resolver being called."""
    body = unknown_event("evt_lean")

    with mock.patch("config.asgi.django_asgi_app", side_effect=AssertionError("Django ran")):
        response = AsgiClient().post("/webhooks/sandbox/", body, HTTP_STRIPE_SIGNATURE=signed(body))

    assert response.status_code == 200, response.content
    assert WebhookEvent.objects.get().event_id == "evt_lean"
