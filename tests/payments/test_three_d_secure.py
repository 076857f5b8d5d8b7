"""3-D Secure on the sandbox gateway, end to end: the payer gets the challenge (and only the
payer), passing it completes the payment, failing it rejects it, abandoning it cancels it after
PAYMENTS_VERIFICATION_TIMEOUT_SECONDS; each failure puts the milestone back to pending."""

import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from escrow.models import JournalEntry, Milestone
from payments import services
from payments.gateways import sandbox
from payments.models import GatewayAttempt, Payment, SandboxObject
from realtime.models import Event

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "pm_card_authenticationRequired"


@pytest.fixture(autouse=True)
def _challenge(settings):
    settings.SANDBOX_AUTHENTICATION = "challenge"
    settings.PAYMENTS_VERIFICATION_TIMEOUT_SECONDS = 1800


def fund(party, milestone, token=TOKEN):
    method = party.post("/api/v1/payment-methods", {"token": token}, format="json").json()
    response = party.post(
        f"/api/v1/milestones/{milestone.pk}/fund", {"payment_method": method["id"]}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def intent_of(payment_id) -> dict:
    payment = Payment.objects.get(pk=payment_id)
    return SandboxObject.objects.get(object_id=payment.gateway_payment_id).data


def answer_challenge(client, next_action, result):
    """What the payer's browser does on the sandbox's page: post the form it shows."""
    url = urlsplit(next_action["redirect_url"])
    secret = parse_qs(url.query)["client_secret"][0]
    return client.post(url.path, {"client_secret": secret, "result": result})


def deadline_passes(payment_id):
    """Time passes beyond the challenge's deadline (next_attempt_at while verifying)."""
    Payment.objects.filter(pk=payment_id).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def status_events(payment_id):
    return list(
        Event.objects.filter(type="payment.status_updated", aggregate_id=str(payment_id))
        .order_by("id")
        .values_list("data__new_status", flat=True)
    )


def test_the_fund_answer_gives_the_payer_the_challenge(homeowner, milestone):
    """The card needs 3-D Secure: the payment waits in verifying, the milestone in funding,
    and the fund answer tells the payer where to complete the check (the sandbox's page, like
    Stripe's redirect_to_url) with the intent's client secret."""
    body = fund(homeowner, milestone)

    assert body["status"] == "verifying"
    action = body["next_action"]
    intent = intent_of(body["id"])
    assert action["type"] == "redirect_to_url"
    assert action["client_secret"] == intent["client_secret"]
    assert action["redirect_url"].startswith(f"http://testserver/sandbox/3ds/{intent['id']}/?")
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDING
    payment = Payment.objects.get(pk=body["id"])
    assert payment.next_attempt_at > timezone.now() + timedelta(seconds=1700)


def test_only_the_payer_sees_the_next_action(homeowner, contractor, operator, milestone):
    """The client secret can confirm the payment: the payee and operators see the payment
    but never its next action, and no event carries the secret."""
    body = fund(homeowner, milestone)
    secret = body["next_action"]["client_secret"]

    payer_view = homeowner.get(f"/api/v1/payments/{body['id']}").json()
    payee_view = contractor.get(f"/api/v1/payments/{body['id']}").json()
    operator_view = operator.get(f"/api/v1/payments/{body['id']}").json()
    listed = contractor.get("/api/v1/payments").json()["results"]

    assert payer_view["next_action"] == body["next_action"]
    assert payee_view["status"] == "verifying" and payee_view["next_action"] is None
    assert operator_view["next_action"] is None
    assert [p["next_action"] for p in listed] == [None]
    assert secret not in json.dumps(list(Event.objects.values_list("data", flat=True)))


def test_passing_the_challenge_completes_the_payment_and_funds_the_milestone(homeowner, milestone):
    """The payer passes the check on the sandbox's page; the sandbox's webhooks move the
    payment to completed, the milestone is funded once, and the challenge is forgotten."""
    body = fund(homeowner, milestone)

    response = answer_challenge(homeowner.client, body["next_action"], "pass")
    sandbox.flush()

    assert response.status_code == 200
    payment = Payment.objects.get(pk=body["id"])
    assert payment.status == "completed"
    assert payment.next_action == {} and payment.gateway_client_secret == ""
    assert payment.next_attempt_at is None
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDED
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1
    assert status_events(payment.pk) == ["processing", "verifying", "authorized", "completed"]
    assert homeowner.get(f"/api/v1/payments/{payment.pk}").json()["next_action"] is None


def test_failing_the_challenge_rejects_the_payment_and_the_milestone_is_open_again(
    homeowner, contractor, milestone
):
    """The payer fails the check: the payment is rejected with the gateway's reason, the
    milestone goes back to pending (both parties are told), the intent is closed at the
    gateway so its secret cannot confirm it later, and the homeowner can fund again."""
    body = fund(homeowner, milestone)

    answer_challenge(homeowner.client, body["next_action"], "fail")
    sandbox.flush()

    payment = Payment.objects.get(pk=body["id"])
    assert payment.status == "rejected"
    assert payment.failure_code == "payment_intent_authentication_failure"
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.PENDING
    assert not JournalEntry.objects.filter(reference=f"fund:{payment.pk}").exists()
    assert intent_of(payment.pk)["status"] == "canceled"
    failed = Event.objects.get(type="payment.failed", aggregate_id=str(payment.pk))
    assert set(failed.audience) == {homeowner.user.pk, contractor.user.pk}
    assert Event.objects.filter(
        type="milestone.status_updated", data__new_status="pending", data__milestone_id=milestone.pk
    ).exists()
    assert fund(homeowner, milestone, "pm_card_visa")["status"] == "completed"


def test_an_abandoned_challenge_is_cancelled_after_the_timeout(homeowner, contractor, milestone):
    """Nobody answers the check: once its deadline has passed, work_due cancels the intent at
    the gateway, the payment becomes cancelled (reason in words), the milestone pending, both
    parties are told, and the late cancellation webhook changes nothing."""
    body = fund(homeowner, milestone)
    sandbox.take_outbox()
    deadline_passes(body["id"])

    due = services.work_due()
    sandbox.flush()

    assert body["id"] in due["payments"]
    payment = Payment.objects.get(pk=body["id"])
    assert payment.status == "cancelled"
    assert payment.failure_code == "authentication_abandoned"
    assert "30 minutes" in payment.failure_message
    assert intent_of(payment.pk)["status"] == "canceled"
    assert payment.attempts.filter(operation=GatewayAttempt.Operation.CANCEL).count() == 1
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.PENDING
    failed = Event.objects.get(type="payment.failed", aggregate_id=str(payment.pk))
    assert set(failed.audience) == {homeowner.user.pk, contractor.user.pk}
    assert failed.data["status"] == "cancelled"
    assert failed.data["failure_message"] == payment.failure_message
    assert status_events(payment.pk) == ["processing", "verifying", "cancelled"]
    assert homeowner.get(f"/api/v1/payments/{payment.pk}").json()["next_action"] is None


def test_a_challenge_before_its_deadline_is_left_alone(homeowner, milestone):
    """work_due does not touch a challenge still within its time: no gateway call, no
    change to the payment or the milestone."""
    body = fund(homeowner, milestone)
    attempts = GatewayAttempt.objects.count()

    due = services.work_due()
    services.payment_process(payment_id=body["id"])

    assert body["id"] not in due["payments"]
    assert GatewayAttempt.objects.count() == attempts
    payment = Payment.objects.get(pk=body["id"])
    assert payment.status == "verifying" and payment.next_action["type"] == "redirect_to_url"
    assert intent_of(body["id"])["status"] == "requires_action"
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDING


def test_a_passed_challenge_whose_webhook_was_lost_completes_at_the_deadline(homeowner, milestone):
    """The payer passed the check but its webhooks never arrived: at the deadline the gateway
    is asked first, so the payment is captured and completed, not cancelled."""
    body = fund(homeowner, milestone)
    answer_challenge(homeowner.client, body["next_action"], "pass")
    sandbox.take_outbox()  # the gateway's webhooks are lost
    deadline_passes(body["id"])

    services.work_due()
    sandbox.flush()

    payment = Payment.objects.get(pk=body["id"])
    assert payment.status == "completed"
    assert not payment.attempts.filter(operation=GatewayAttempt.Operation.CANCEL).exists()
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDED


def test_a_failed_challenge_whose_webhook_was_lost_is_rejected_at_the_deadline(
    homeowner, milestone
):
    """The payer failed the check and its webhook was lost: at the deadline the gateway's
    answer (authentication failed) rejects the payment rather than calling it abandoned."""
    body = fund(homeowner, milestone)
    answer_challenge(homeowner.client, body["next_action"], "fail")
    sandbox.take_outbox()
    deadline_passes(body["id"])

    services.work_due()

    payment = Payment.objects.get(pk=body["id"])
    assert payment.status == "rejected"
    assert payment.failure_code == "payment_intent_authentication_failure"
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.PENDING


def test_the_challenge_page_refuses_a_wrong_secret_and_changes_nothing(
    homeowner, anonymous, milestone
):
    """Only the client secret lets the page act: a wrong one is 404 and the payment, the
    intent and the outbox stay as they were."""
    body = fund(homeowner, milestone)
    intent = intent_of(body["id"])
    sandbox.take_outbox()

    page = anonymous.get(f"/sandbox/3ds/{intent['id']}/", {"client_secret": "wrong"})
    post = anonymous.post(
        f"/sandbox/3ds/{intent['id']}/", {"client_secret": "wrong", "result": "pass"}
    )

    assert page.status_code == 404 and post.status_code == 404
    assert intent_of(body["id"])["status"] == "requires_action"
    assert Payment.objects.get(pk=body["id"]).status == "verifying"
    assert sandbox.take_outbox() == []


def test_the_challenge_page_shows_the_payment_and_returns_to_our_site_only(homeowner, milestone):
    """The page names the amount and offers both answers; after an answer it returns to a
    return URL on this site, and ignores one elsewhere (no open redirect)."""
    body = fund(homeowner, milestone)
    url = urlsplit(body["next_action"]["redirect_url"])
    secret = parse_qs(url.query)["client_secret"][0]

    page = homeowner.client.get(url.path, {"client_secret": secret})
    outside = homeowner.client.post(
        url.path,
        {"client_secret": secret, "result": "pass", "return_url": "https://evil.example/"},
    )

    html = page.content.decode()
    assert page.status_code == 200
    assert "500.00 USD" in html and 'value="pass"' in html and 'value="fail"' in html
    assert outside.status_code == 200  # the answer is taken, the foreign URL is not followed
    assert intent_of(body["id"])["status"] == "requires_capture"


def test_the_challenge_page_answers_json_clients(anonymous, homeowner, milestone):
    """An API client (no browser) passes the check with a JSON POST to the redirect URL."""
    body = fund(homeowner, milestone)
    url = urlsplit(body["next_action"]["redirect_url"])

    response = anonymous.post(
        url.path,
        {"client_secret": body["next_action"]["client_secret"], "result": "pass"},
        format="json",
    )
    sandbox.flush()

    assert response.status_code == 200 and response.json()["status"] == "requires_capture"
    assert Payment.objects.get(pk=body["id"]).status == "completed"


def test_the_challenge_page_refuses_an_unknown_answer_and_changes_nothing(
    anonymous, homeowner, milestone
):
    """An answer that is neither pass nor fail is a 400 naming the field; the intent still
    waits for the card holder and nothing is sent."""
    body = fund(homeowner, milestone)
    url = urlsplit(body["next_action"]["redirect_url"])
    sandbox.take_outbox()

    response = anonymous.post(
        url.path,
        {"client_secret": body["next_action"]["client_secret"], "result": "maybe"},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "result"
    assert intent_of(body["id"])["status"] == "requires_action"
    assert Payment.objects.get(pk=body["id"]).status == "verifying"
    assert sandbox.take_outbox() == []
