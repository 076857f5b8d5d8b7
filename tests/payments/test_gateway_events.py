"""Webhook parsing lives in the gateway adapters (parse_webhook(body) -> GatewayEvent): the
services dispatch on our own event kinds, and what a wrong value would turn into money is
refused while parsing. Recorded Stripe payloads parse as the sandbox's do."""

import json
from pathlib import Path

import pytest

from payments.exceptions import TransferReversalInvalid
from payments.gateways import PROVIDERS, EventKind, gateway_class, parse_webhook

RECORDINGS = Path(__file__).parent / "recordings"


def _recorded(name: str) -> bytes:
    return (RECORDINGS / name).read_bytes()


def test_a_recorded_stripe_payment_failure_is_a_payment_update_with_its_decline_in_words():
    event = parse_webhook("stripe", _recorded("event_payment_intent_authentication_failed.json"))

    assert event.kind == EventKind.PAYMENT_UPDATED
    assert event.intent.id == event.payment.intent_id == event.object_id
    assert event.intent.status == "requires_payment_method"
    assert event.intent.failure_message


def test_a_recorded_partial_transfer_reversal_carries_the_cumulative_amount():
    event = parse_webhook("stripe", _recorded("event_transfer_reversed_partial.json"))

    assert event.kind == EventKind.TRANSFER_UPDATED
    assert (event.transfer.amount, event.transfer.amount_reversed) == (47_500, 10_000)
    assert not event.transfer.reversed


def test_a_non_integer_amount_reversed_is_refused_while_parsing():
    payload = json.loads(_recorded("event_transfer_reversed_partial.json"))
    payload["data"]["object"]["amount_reversed"] = "10000"

    with pytest.raises(TransferReversalInvalid):
        parse_webhook("stripe", payload)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_adapter_parses_a_charge_dispute_into_our_words(provider):
    body = {
        "id": "evt_1",
        "type": "charge.dispute.created",
        "data": {
            "object": {
                "id": "dp_1",
                "object": "dispute",
                "charge": "ch_1",
                "payment_intent": "pi_1",
                "reason": "fraudulent",
                "status": "needs_response",
                "metadata": {"payment_id": "42"},
            }
        },
    }

    event = gateway_class(provider).parse_webhook(json.dumps(body).encode())

    assert event.kind == EventKind.CHARGE_DISPUTED
    assert (event.dispute.id, event.dispute.reason, event.dispute.status) == (
        "dp_1",
        "fraudulent",
        "needs_response",
    )
    assert (event.payment.payment_id, event.payment.intent_id, event.payment.charge_id) == (
        42,
        "pi_1",
        "ch_1",
    )


def test_the_inbox_rows_stored_type_decides_the_kind_and_unknown_types_are_unhandled():
    body = {"type": "payment_intent.succeeded", "data": {"object": {"id": "ch_1"}}}

    assert parse_webhook("sandbox", body, type="charge.succeeded").kind == EventKind.UNHANDLED
    refunded = parse_webhook(
        "sandbox",
        {"data": {"object": {"id": "ch_1", "object": "charge", "refunds": {"data": []}}}},
        type="charge.refunded",
    )
    assert refunded.kind == EventKind.CHARGE_REFUNDED
    assert refunded.payment.charge_id == "ch_1"
