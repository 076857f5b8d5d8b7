"""The Stripe adapter against localstripe (started by the tests on 127.0.0.1) and, for
Connect transfers, which localstripe does not fake, recorded Stripe responses."""

import json
import time
from unittest import mock

import pytest

from escrow import ledger
from escrow.models import JournalEntry, Milestone
from payments.gateways import stripe as stripe_adapter
from payments.models import Payment, Payout, WebhookEvent
from payments.services import payment_process, payout_account_set, reconcile
from payments.signatures import sign
from tests.payments.stripe_support import RECORDINGS, LocalStripe, ProxyHTTPClient

pytestmark = pytest.mark.django_db(transaction=True)

WEBHOOK_SECRET = "whsec_localstripe"


@pytest.fixture(scope="session")
def localstripe():
    server = LocalStripe()
    yield server
    server.stop()


@pytest.fixture
def proxy():
    return ProxyHTTPClient()


@pytest.fixture(autouse=True)
def _stripe(settings, localstripe, proxy):
    settings.PAYMENT_GATEWAY = "stripe"
    settings.STRIPE_API_BASE = localstripe.url
    settings.STRIPE_SECRET_KEY = "sk_test_localstripe"
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    localstripe.disable_webhooks()
    with mock.patch.object(stripe_adapter, "_http_client", return_value=proxy):
        yield
    localstripe.disable_webhooks()


def add_method(party, token):
    response = party.post("/api/v1/payment-methods", {"token": token}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def fund(party, milestone, token="pm_card_visa"):
    method = add_method(party, token)
    response = party.post(
        f"/api/v1/milestones/{milestone.pk}/fund", {"payment_method": method["id"]}, format="json"
    )
    assert response.status_code == 201, response.content
    return Payment.objects.get(pk=response.json()["id"])


def wait_for(predicate, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_requests_pin_the_api_version_and_use_keys_from_our_rows(homeowner, milestone, proxy):
    payment = fund(homeowner, milestone)

    creates = [r for r in proxy.requests if r["path"] == "/v1/payment_intents"]
    assert creates[0]["headers"]["Stripe-Version"] == stripe_adapter.API_VERSION
    assert creates[0]["headers"]["Idempotency-Key"] == f"payment:{payment.pk}:authorize"
    params = creates[0]["params"]
    assert params["metadata[payment_id]"] == str(payment.pk)
    assert params["capture_method"] == "manual"
    for refused in ("transfer_group", "description", "automatic_payment_methods"):
        assert not any(key.startswith(refused) for key in params)


def test_visa_is_authorized_then_captured(homeowner, milestone, localstripe):
    payment = fund(homeowner, milestone)

    assert payment.status == "completed"
    assert payment.gateway_payment_id.startswith("pi_")
    assert payment.gateway_charge_id.startswith("ch_")
    intent = localstripe.client().v1.payment_intents.retrieve(payment.gateway_payment_id)
    assert intent["status"] == "succeeded"
    assert intent["amount"] == milestone.amount
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDED
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1


def test_a_declined_charge_fails_the_payment(homeowner, milestone):
    payment = fund(homeowner, milestone, "pm_card_chargeCustomerFail")

    assert payment.status == "failed"
    assert payment.failure_code == "card_declined"
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.PENDING


def test_localstripe_webhooks_drive_a_3ds_payment_to_completed(
    homeowner, milestone, localstripe, live_server, settings
):
    settings.PAYMENTS_CAPTURE_METHOD = "automatic"
    client = localstripe.client()
    method = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4000002760003184", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    payment = fund(homeowner, milestone, method["id"])
    assert payment.status == "verifying"
    localstripe.register_webhook(f"{live_server.url}/webhooks/stripe/", WEBHOOK_SECRET)

    # The customer completes 3-D Secure at Stripe; only Stripe's signed webhook tells us.
    intent = client.v1.payment_intents.retrieve(payment.gateway_payment_id)
    import requests

    requests.post(
        f"{localstripe.url}/v1/payment_intents/{intent['id']}/_authenticate",
        data={"client_secret": intent["client_secret"], "success": "true"},
        headers={"Authorization": "Bearer sk_test_localstripe"},
        timeout=5,
    )

    ours = WebhookEvent.objects.filter(
        provider="stripe",
        type="payment_intent.succeeded",
        payload__data__object__id=payment.gateway_payment_id,
    )
    assert wait_for(lambda: ours.filter(status="processed").exists())
    assert Payment.objects.get(pk=payment.pk).status == "completed"
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDED
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1


def test_partial_refund_through_stripe(homeowner, operator, milestone, localstripe):
    payment = fund(homeowner, milestone)

    response = operator.post(
        f"/api/v1/payments/{payment.pk}/refunds", {"amount": 12_345}, format="json"
    )

    assert response.status_code == 201
    payment.refresh_from_db()
    assert payment.status == "partially_refunded"
    assert payment.amount_refunded == 12_345
    refund = payment.refunds.get()
    assert refund.status == "succeeded"
    remote = localstripe.client().v1.refunds.retrieve(refund.gateway_refund_id)
    assert remote["amount"] == 12_345


def test_milestone_refund_refunds_at_stripe(homeowner, milestone, localstripe):
    payment = fund(homeowner, milestone)

    assert homeowner.post(f"/api/v1/milestones/{milestone.pk}/refund").status_code == 200

    payment.refresh_from_db()
    assert payment.status == "refunded"
    remote = localstripe.client().v1.refunds.retrieve(payment.refunds.get().gateway_refund_id)
    assert remote["amount"] == milestone.amount


def test_fund_submit_approve_pays_out_with_a_connect_transfer(
    homeowner, contractor, milestone, proxy
):
    payment = fund(homeowner, milestone)
    payout_account_set(user=contractor.user, provider="stripe", account_id="acct_1MTfjCQ9PRzxEwkZ")

    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    assert homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve").status_code == 200

    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "paid"
    assert payout.gateway_transfer_id == "tr_1QxR3gLkdIwHu7ixNCZvFdgA"
    (transfer,) = [r for r in proxy.requests if r["path"] == "/v1/transfers"]
    assert transfer["params"]["transfer_group"] == f"project-{milestone.project_id}"
    assert transfer["params"]["source_transaction"] == payment.gateway_charge_id
    assert transfer["params"]["destination"] == "acct_1MTfjCQ9PRzxEwkZ"
    assert transfer["params"]["amount"] == str(payout.amount)
    assert transfer["headers"]["Idempotency-Key"] == f"payout:{payout.pk}:transfer"
    assert JournalEntry.objects.filter(reference=f"payout-paid:{payout.pk}").count() == 1
    assert ledger.balance(ledger.payable_account(contractor.user.pk, "usd")) == 0


def test_a_refused_transfer_fails_the_payout_and_owes_the_money_again(
    homeowner, contractor, milestone, proxy
):
    fund(homeowner, milestone)
    payout_account_set(user=contractor.user, provider="stripe", account_id="acct_1")
    proxy.transfer_responses.append(("transfer_insufficient_balance", 400))

    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")

    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "failed"
    assert payout.failure_code == "balance_insufficient"
    assert ledger.balance(ledger.payable_account(contractor.user.pk, "usd")) == payout.amount
    assert ledger.balance(ledger.in_transit_account("usd")) == 0


def test_a_500_on_transfer_is_retried_with_the_same_key(homeowner, contractor, milestone, proxy):
    fund(homeowner, milestone)
    payout_account_set(user=contractor.user, provider="stripe", account_id="acct_1")
    proxy.transfer_responses.append(("api_error_500", 500))
    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")
    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "pending"

    from payments.services import payout_process

    payout_process(payout_id=payout.pk)

    payout.refresh_from_db()
    assert payout.status == "paid"
    keys = {r["headers"]["Idempotency-Key"] for r in proxy.requests if r["path"] == "/v1/transfers"}
    assert keys == {f"payout:{payout.pk}:transfer"}


def test_without_a_connected_account_the_payout_waits(homeowner, contractor, milestone, proxy):
    fund(homeowner, milestone)
    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")

    assert Payout.objects.get(milestone=milestone).status == "needs_account"
    assert not [r for r in proxy.requests if r["path"] == "/v1/transfers"]


def test_a_lost_response_is_resolved_by_repeating_the_key_and_charges_once(
    homeowner, milestone, proxy, localstripe
):
    proxy.lose_next.add("/v1/payment_intents")
    before = len(localstripe.client().v1.payment_intents.list(params={"limit": 100})["data"])

    payment = fund(homeowner, milestone)
    assert payment.status == "processing"
    assert payment.attempts.get(operation="authorize").outcome == "unknown"

    payment_process(payment_id=payment.pk)

    payment.refresh_from_db()
    assert payment.status == "completed"
    after = len(localstripe.client().v1.payment_intents.list(params={"limit": 100})["data"])
    assert after == before + 1
    keys = [
        r["headers"]["Idempotency-Key"]
        for r in proxy.requests
        if r["path"] == "/v1/payment_intents"
    ]
    assert keys == [f"payment:{payment.pk}:authorize"] * 2


def test_reconciliation_repairs_a_missed_webhook(homeowner, milestone, localstripe, settings):
    settings.PAYMENTS_CAPTURE_METHOD = "automatic"
    client = localstripe.client()
    method = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4000002760003184", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    payment = fund(homeowner, milestone, method["id"])
    intent = client.v1.payment_intents.retrieve(payment.gateway_payment_id)
    import requests

    requests.post(
        f"{localstripe.url}/v1/payment_intents/{intent['id']}/_authenticate",
        data={"client_secret": intent["client_secret"], "success": "true"},
        headers={"Authorization": "Bearer sk_test_localstripe"},
        timeout=5,
    )  # webhooks are off: this success never reaches us by webhook

    run = reconcile(provider="stripe")

    payment.refresh_from_db()
    assert payment.status == "completed"
    finding = run.findings.get(kind="status_mismatch", local_id=str(payment.pk))
    assert finding.is_repaired
    assert JournalEntry.objects.filter(reference=f"fund:{payment.pk}").count() == 1


# --- Transfer reversals: Stripe's transfer.reversed, in the recorded shape -------------------


def paid_stripe_payout(homeowner, contractor, milestone) -> Payout:
    fund(homeowner, milestone)
    payout_account_set(user=contractor.user, provider="stripe", account_id="acct_1MTfjCQ9PRzxEwkZ")
    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")
    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "paid"
    return payout


def transfer_reversed_event(name: str, payout: Payout, **changes) -> bytes:
    """A recorded transfer.reversed event; as Stripe echoes them, the transfer carries the
    metadata, group and source it was created with."""
    event = json.loads((RECORDINGS / f"{name}.json").read_text())
    transfer = event["data"]["object"]
    transfer["metadata"] = {"payout_id": str(payout.pk), "milestone_id": str(payout.milestone_id)}
    transfer["transfer_group"] = payout.transfer_group
    transfer["source_transaction"] = payout.payment.gateway_charge_id
    transfer.update(changes)
    return json.dumps(event).encode()


def deliver_stripe(client, body: bytes):
    response = client.post(
        "/webhooks/stripe/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body, WEBHOOK_SECRET),
    )
    assert response.status_code == 200, response.content
    return response


def test_stripe_partial_then_full_reversal_through_the_signed_webhook(
    anonymous, homeowner, contractor, milestone
):
    payout = paid_stripe_payout(homeowner, contractor, milestone)
    assert payout.amount == 47_500  # the recordings' transfer amount
    partial = transfer_reversed_event("event_transfer_reversed_partial", payout)
    full = transfer_reversed_event("event_transfer_reversed_full", payout)

    deliver_stripe(anonymous, partial)
    payout.refresh_from_db()
    assert (payout.status, payout.amount_reversed) == ("partially_reversed", 10_000)

    deliver_stripe(anonymous, full)
    deliver_stripe(anonymous, partial)  # a late redelivery of the first

    payout.refresh_from_db()
    assert (payout.status, payout.amount_reversed) == ("reversed", 47_500)
    references = set(
        JournalEntry.objects.filter(reference__startswith="payout-reversal:").values_list(
            "reference", flat=True
        )
    )
    assert references == {
        f"payout-reversal:{payout.pk}:10000",
        f"payout-reversal:{payout.pk}:47500",
    }
    assert ledger.balance(ledger.payable_account(contractor.user.pk, "usd")) == 47_500
    assert list(
        WebhookEvent.objects.filter(type="transfer.reversed")
        .order_by("id")
        .values_list("status", flat=True)
    ) == ["processed", "processed"]  # the redelivery kept its event id: a duplicate
    from payments.invariants import funding_violations

    assert funding_violations() == []


def test_stripe_reversal_out_of_order_applies_the_cumulative_amount_once(
    anonymous, homeowner, contractor, milestone
):
    payout = paid_stripe_payout(homeowner, contractor, milestone)

    deliver_stripe(anonymous, transfer_reversed_event("event_transfer_reversed_full", payout))
    deliver_stripe(anonymous, transfer_reversed_event("event_transfer_reversed_partial", payout))

    payout.refresh_from_db()
    assert (payout.status, payout.amount_reversed) == ("reversed", 47_500)
    entries = JournalEntry.objects.filter(reference__startswith=f"payout-reversal:{payout.pk}:")
    assert list(entries.values_list("amount", flat=True)) == [47_500]
    stale = WebhookEvent.objects.get(payload__id="evt_1QxS9bLkdIwHu7ixYx3Jc2Fh")
    assert stale.status == "ignored"


def test_stripe_reversal_larger_than_the_transfer_is_refused(
    anonymous, homeowner, contractor, milestone
):
    payout = paid_stripe_payout(homeowner, contractor, milestone)
    entries_before = JournalEntry.objects.count()
    body = transfer_reversed_event("event_transfer_reversed_full", payout, amount_reversed=47_501)

    deliver_stripe(anonymous, body)

    assert WebhookEvent.objects.get(type="transfer.reversed").status == "failed"
    payout.refresh_from_db()
    assert (payout.status, payout.amount_reversed) == ("paid", 0)
    assert JournalEntry.objects.count() == entries_before


def test_the_adapter_reads_amount_reversed_from_a_transfer(proxy):
    body = json.loads((RECORDINGS / "event_transfer_reversed_partial.json").read_text())

    result = stripe_adapter._transfer(body["data"]["object"])

    assert (result.amount, result.amount_reversed, result.reversed) == (47_500, 10_000, False)


# --- Customers: one per user, payment methods attached to it -----------------------------


def test_payment_methods_are_attached_to_one_customer_per_user(homeowner, localstripe, proxy):
    from payments.models import GatewayCustomer, PaymentMethod

    card = {"number": "5555555555554444", "exp_month": 12, "exp_year": 2034, "cvc": "123"}
    created = localstripe.client().v1.payment_methods.create(params={"type": "card", "card": card})
    first = add_method(homeowner, "pm_card_visa")
    second = add_method(homeowner, created["id"])

    (customer,) = GatewayCustomer.objects.filter(user=homeowner.user)
    assert customer.provider == "stripe"
    assert customer.customer_id.startswith("cus_")
    creates = [r for r in proxy.requests if r["path"] == "/v1/customers"]
    assert len(creates) == 1
    assert creates[0]["headers"]["Idempotency-Key"] == f"customer:user:{homeowner.user.pk}"
    assert creates[0]["params"]["metadata[user_id]"] == str(homeowner.user.pk)
    for method in (first, second):
        stored = PaymentMethod.objects.get(pk=method["id"])
        assert stored.customer_id == customer.customer_id
        assert stored.token.startswith("pm_")
        remote = localstripe.client().v1.payment_methods.retrieve(stored.token)
        assert remote["customer"] == customer.customer_id
    # Stripe turns a test token into a new PaymentMethod on attach: that id is charged.
    assert PaymentMethod.objects.get(pk=first["id"]).token != "pm_card_visa"
    assert PaymentMethod.objects.get(pk=second["id"]).token == created["id"]
    attaches = [r for r in proxy.requests if r["path"].endswith("/attach")]
    assert [r["params"]["customer"] for r in attaches] == [customer.customer_id] * 2


def test_funding_names_the_methods_customer(homeowner, milestone, proxy):
    from payments.models import GatewayCustomer

    payment = fund(homeowner, milestone)

    assert payment.status == "completed"
    customer = GatewayCustomer.objects.get(user=homeowner.user)
    (create,) = [r for r in proxy.requests if r["path"] == "/v1/payment_intents"]
    assert create["params"]["customer"] == customer.customer_id
    assert create["params"]["payment_method"] == payment.payment_method.token


def test_a_lost_customer_answer_gets_the_same_customer_on_retry(homeowner, proxy):
    from payments.models import GatewayCustomer, PaymentMethod

    proxy.lose_next.add("/v1/customers")
    response = homeowner.post("/api/v1/payment-methods", {"token": "pm_card_visa"}, format="json")
    assert response.status_code == 422
    assert not GatewayCustomer.objects.exists()
    assert not PaymentMethod.objects.exists()

    add_method(homeowner, "pm_card_visa")

    creates = [r for r in proxy.requests if r["path"] == "/v1/customers"]
    keys = {r["headers"]["Idempotency-Key"] for r in creates}
    assert keys == {f"customer:user:{homeowner.user.pk}"}
    first_answer = json.loads(proxy._by_key[f"customer:user:{homeowner.user.pk}"][0])
    assert GatewayCustomer.objects.get().customer_id == first_answer["id"]


def test_a_card_refused_on_attach_adds_no_method(homeowner, proxy):
    from payments.models import PaymentMethod

    response = homeowner.post(
        "/api/v1/payment-methods", {"token": "pm_card_visa_chargeDeclined"}, format="json"
    )

    assert response.status_code == 422
    assert not PaymentMethod.objects.exists()


# --- 3-D Secure: the payer's next action, failure and abandonment ----------------------------


def three_d_secure_payment(homeowner, milestone, localstripe) -> Payment:
    method = localstripe.client().v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4000002760003184", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    payment = fund(homeowner, milestone, method["id"])
    assert payment.status == "verifying"
    return payment


def localstripe_authenticate(localstripe, intent_id: str, success: bool) -> None:
    import requests

    intent = localstripe.client().v1.payment_intents.retrieve(intent_id)
    response = requests.post(
        f"{localstripe.url}/v1/payment_intents/{intent_id}/_authenticate",
        data={"client_secret": intent["client_secret"], "success": "true" if success else "false"},
        headers={"Authorization": "Bearer sk_test_localstripe"},
        timeout=5,
    )
    assert response.status_code == 200, response.content


def deadline_passes(payment: Payment) -> None:
    from datetime import timedelta

    from django.utils import timezone

    Payment.objects.filter(pk=payment.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def test_a_3ds_payment_gives_the_payer_what_stripe_js_needs(
    homeowner, contractor, milestone, localstripe
):
    """Stripe asks for 3-D Secure (next_action use_stripe_sdk): the payer's view of the payment
    carries that type and the intent's client secret for stripe.handleNextAction; the
    payee's carries nothing."""
    payment = three_d_secure_payment(homeowner, milestone, localstripe)
    intent = localstripe.client().v1.payment_intents.retrieve(payment.gateway_payment_id)

    payer_view = homeowner.get(f"/api/v1/payments/{payment.pk}").json()
    payee_view = contractor.get(f"/api/v1/payments/{payment.pk}").json()

    assert payer_view["next_action"] == {
        "type": "use_stripe_sdk",
        "client_secret": intent["client_secret"],
    }
    assert payee_view["next_action"] is None


def test_an_abandoned_stripe_challenge_is_cancelled_at_stripe(homeowner, milestone, localstripe):
    """Nobody completes the challenge: after the deadline work_due asks Stripe (still
    requires_action), cancels the PaymentIntent there, and the payment is cancelled with the
    milestone back to pending."""
    from payments.services import work_due

    payment = three_d_secure_payment(homeowner, milestone, localstripe)
    deadline_passes(payment)

    work_due()

    payment.refresh_from_db()
    assert payment.status == "cancelled"
    assert payment.failure_code == "authentication_abandoned"
    intent = localstripe.client().v1.payment_intents.retrieve(payment.gateway_payment_id)
    assert intent["status"] == "canceled"
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.PENDING


def test_a_failed_stripe_challenge_is_rejected_and_its_intent_closed(
    homeowner, milestone, localstripe
):
    """The card holder fails 3-D Secure (localstripe sends no webhook for it): at the deadline
    Stripe's answer, authentication failed, rejects the payment (not abandoned), the milestone
    is pending again, and the intent is cancelled at Stripe so its secret cannot confirm it
    with another card later."""
    from payments.services import work_due

    payment = three_d_secure_payment(homeowner, milestone, localstripe)
    localstripe_authenticate(localstripe, payment.gateway_payment_id, success=False)
    deadline_passes(payment)

    work_due()

    payment.refresh_from_db()
    assert payment.status == "rejected"
    assert payment.failure_code == "payment_intent_authentication_failure"
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.PENDING
    intent = localstripe.client().v1.payment_intents.retrieve(payment.gateway_payment_id)
    assert intent["status"] == "canceled"


def test_stripes_authentication_failure_webhook_rejects_the_payment(
    homeowner, milestone, localstripe, client
):
    """Stripe's payment_intent.payment_failed for a failed challenge (recorded shape) rejects
    the verifying payment at once and puts the milestone back to pending."""
    payment = three_d_secure_payment(homeowner, milestone, localstripe)
    event = json.loads((RECORDINGS / "event_payment_intent_authentication_failed.json").read_text())
    event["data"]["object"].update(
        id=payment.gateway_payment_id,
        amount=payment.amount,
        metadata={"payment_id": str(payment.pk)},
    )
    body = json.dumps(event).encode()

    response = client.post(
        "/webhooks/stripe/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body, WEBHOOK_SECRET),
    )

    assert response.status_code == 200
    payment.refresh_from_db()
    assert payment.status == "rejected"
    assert payment.failure_code == "payment_intent_authentication_failure"
    assert payment.gateway_client_secret == "" and payment.next_action == {}
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.PENDING
