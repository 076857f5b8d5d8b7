"""Transfer reversals: the gateway takes back all or part of a paid payout (transfer.reversed,
or found by reconciliation). The reversed money is owed to the contractor again, once per
step of Stripe's cumulative `amount_reversed`, whatever the order or number of deliveries."""

import json
from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.test import Client

from escrow import ledger
from escrow.models import JournalEntry
from payments import services
from payments.gateways import InvalidRequest, sandbox
from payments.invariants import funding_violations
from payments.models import Discrepancy, Payout, SandboxObject, WebhookEvent
from realtime.models import Event
from tests.payments.helpers import event_body, fund, post_webhook, signed

pytestmark = pytest.mark.django_db(transaction=True)

GATEWAY = sandbox.SandboxGateway()


def _client():
    return Client()


def release(homeowner, contractor, milestone):
    assert contractor.post(f"/api/v1/milestones/{milestone.pk}/submit").status_code == 200
    assert homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve").status_code == 200


@pytest.fixture
def paid_payout(homeowner, contractor, operator, milestone):
    """A released milestone whose payout is paid; the gateway's own webhooks so far are
    delivered, so what the tests queue next is theirs alone."""
    operator.user.email = "ops@example.com"
    operator.user.save()
    fund(milestone)
    release(homeowner, contractor, milestone)
    sandbox.flush()
    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "paid"
    return payout


def reversal_deliveries():
    return [d for d in sandbox.take_outbox() if b'"transfer.reversed"' in d.body]


def payable(payout):
    return ledger.balance(ledger.payable_account(payout.payee_id, payout.currency))


def gateway_balance(payout):
    return ledger.balance(ledger.gateway_account("sandbox", payout.currency))


def reversal_entries(payout):
    return dict(
        JournalEntry.objects.filter(reference__startswith=f"payout-reversal:{payout.pk}:")
        .order_by("id")
        .values_list("reference", "amount")
    )


def operator_mail(payout):
    subject = f"Payout {payout.pk} reversed at the gateway"
    return [message for message in mail.outbox if message.subject == subject]


def assert_ledger_clean():
    assert funding_violations() == []
    out = StringIO()
    call_command("check_ledger", stdout=out)
    assert "ok" in out.getvalue()


def test_a_full_reversal_owes_the_money_to_the_contractor_again(paid_payout, operator):
    payout = paid_payout
    gateway_before = gateway_balance(payout)

    GATEWAY.reverse_transfer(transfer_id=payout.gateway_transfer_id)
    sandbox.flush()

    payout.refresh_from_db()
    assert payout.status == "reversed"
    assert payout.amount_reversed == payout.amount
    assert payout.reversed_at is not None
    assert reversal_entries(payout) == {
        f"payout-reversal:{payout.pk}:{payout.amount}": payout.amount
    }
    assert payable(payout) == payout.amount
    assert gateway_balance(payout) == gateway_before + payout.amount
    event = Event.objects.get(type="payout.reversed")
    assert event.data["payout_id"] == payout.pk
    assert event.data["amount"] == payout.amount
    assert event.data["amount_reversed"] == payout.amount
    assert event.data["reversal_amount"] == payout.amount
    assert event.data["currency"] == "usd"
    assert event.data["status"] == "reversed"
    assert event.data["previous_status"] == "paid"
    assert {payout.payee_id, operator.user.pk} <= set(event.audience)
    assert [m.to for m in operator_mail(payout)] == [["ops@example.com"]]
    assert WebhookEvent.objects.get(type="transfer.reversed").status == "processed"
    assert_ledger_clean()


def test_after_a_reversal_the_contractors_balances_show_it_owed_not_paid_out(
    paid_payout, contractor
):
    payout = paid_payout
    before = contractor.get("/api/v1/balances").json()["usd"]

    GATEWAY.reverse_transfer(transfer_id=payout.gateway_transfer_id, amount=1_000)
    sandbox.flush()
    after = contractor.get("/api/v1/balances").json()["usd"]

    assert before["paid_out"] == payout.amount and before["payable"] == 0
    assert after["paid_out"] == payout.amount - 1_000
    assert after["payable"] == 1_000
    assert JournalEntry.objects.get(reference__startswith="payout-reversal:").kind == (
        "payout_reversed"
    )


def test_partial_reversals_add_up_step_by_step(paid_payout):
    payout = paid_payout

    GATEWAY.reverse_transfer(transfer_id=payout.gateway_transfer_id, amount=10_000)
    sandbox.flush()
    payout.refresh_from_db()
    assert payout.status == "partially_reversed"
    assert payout.amount_reversed == 10_000
    assert payable(payout) == 10_000
    assert_ledger_clean()

    GATEWAY.reverse_transfer(transfer_id=payout.gateway_transfer_id, amount=5_000)
    GATEWAY.reverse_transfer(transfer_id=payout.gateway_transfer_id)
    sandbox.flush()

    payout.refresh_from_db()
    assert payout.status == "reversed"
    assert payout.amount_reversed == payout.amount
    assert reversal_entries(payout) == {
        f"payout-reversal:{payout.pk}:10000": 10_000,
        f"payout-reversal:{payout.pk}:15000": 5_000,
        f"payout-reversal:{payout.pk}:{payout.amount}": payout.amount - 15_000,
    }
    assert payable(payout) == payout.amount
    statuses = Event.objects.filter(type="payout.reversed").order_by("id")
    assert [e.data["status"] for e in statuses] == [
        "partially_reversed",
        "partially_reversed",
        "reversed",
    ]
    assert_ledger_clean()


def test_a_reversal_delivered_twice_has_one_effect(paid_payout):
    payout = paid_payout
    GATEWAY.reverse_transfer(transfer_id=payout.gateway_transfer_id, amount=10_000)
    (delivery,) = reversal_deliveries()

    sandbox.deliver(delivery)
    sandbox.deliver(delivery)
    # A redelivery under a new event id (Stripe retries keep the id; a replayed export
    # does not) is stale by its amount and changes nothing either.
    obj = json.loads(delivery.body)["data"]["object"]
    again = event_body("evt_same_reversal_again", "transfer.reversed", obj)
    assert post_webhook(_client(), again, signed(again)).status_code == 200

    payout.refresh_from_db()
    assert payout.amount_reversed == 10_000
    assert len(reversal_entries(payout)) == 1
    assert payable(payout) == 10_000
    assert Event.objects.filter(type="payout.reversed").count() == 1
    assert len(operator_mail(payout)) == 1
    assert WebhookEvent.objects.get(event_id="evt_same_reversal_again").status == "ignored"
    assert_ledger_clean()


def test_reversals_delivered_out_of_order_reach_the_same_end(paid_payout):
    payout = paid_payout
    GATEWAY.reverse_transfer(transfer_id=payout.gateway_transfer_id, amount=10_000)
    GATEWAY.reverse_transfer(transfer_id=payout.gateway_transfer_id, amount=20_000)
    first, second = reversal_deliveries()

    sandbox.deliver(second)
    sandbox.deliver(first)

    payout.refresh_from_db()
    assert payout.status == "partially_reversed"
    assert payout.amount_reversed == 30_000
    # The newer state carries the whole cumulative amount: one step, nothing lost.
    assert reversal_entries(payout) == {f"payout-reversal:{payout.pk}:30000": 30_000}
    assert payable(payout) == 30_000
    stale = WebhookEvent.objects.filter(type="transfer.reversed").order_by("id").last()
    assert stale.status == "ignored"
    assert_ledger_clean()


def test_a_reversal_that_overtakes_our_transfer_answer_pays_then_reverses(
    homeowner, contractor, milestone
):
    # The transfer is made but its answer is lost, so the payout is still pending when the
    # gateway reports the transfer reversed; its transfer.created arrives last.
    fund(milestone)
    sandbox.flush()
    sandbox.inject_fault("transfer", "timeout")
    release(homeowner, contractor, milestone)
    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "pending"
    transfer = SandboxObject.objects.get(kind="transfer").data
    GATEWAY.reverse_transfer(transfer_id=transfer["id"], amount=7_000)
    created, reversed_ = sandbox.take_outbox()

    sandbox.deliver(reversed_)

    payout.refresh_from_db()
    assert payout.status == "partially_reversed"
    assert payout.gateway_transfer_id == transfer["id"]
    assert payout.amount_reversed == 7_000
    assert [e.type for e in Event.objects.filter(aggregate_id=str(payout.pk)).order_by("id")][
        -2:
    ] == ["payout.paid", "payout.reversed"]
    assert payable(payout) == 7_000
    assert ledger.balance(ledger.in_transit_account("usd")) == 0

    sandbox.deliver(created)
    services.payout_process(payout_id=payout.pk)  # the retry of the lost answer

    payout.refresh_from_db()
    assert payout.status == "partially_reversed"
    assert payout.amount_reversed == 7_000
    assert JournalEntry.objects.filter(reference=f"payout-paid:{payout.pk}").count() == 1
    assert len(reversal_entries(payout)) == 1
    assert SandboxObject.objects.filter(kind="transfer").count() == 1
    assert_ledger_clean()


def test_a_reversal_of_a_transfer_we_do_not_know_yet_is_parked_then_applied(
    homeowner, contractor, milestone
):
    fund(milestone)
    sandbox.flush()
    sandbox.inject_fault("transfer", "timeout")
    release(homeowner, contractor, milestone)
    payout = Payout.objects.get(milestone=milestone)
    transfer = SandboxObject.objects.get(kind="transfer").data
    GATEWAY.reverse_transfer(transfer_id=transfer["id"])
    created, _ = sandbox.take_outbox()
    # Without our metadata only the transfer id can find the payout, and it is not ours yet.
    obj = {**SandboxObject.objects.get(kind="transfer").data, "metadata": {}}
    body = event_body("evt_reversed_unknown", "transfer.reversed", obj)

    assert post_webhook(_client(), body, signed(body)).status_code == 200

    row = WebhookEvent.objects.get(event_id="evt_reversed_unknown")
    assert row.status == "parked"
    payout.refresh_from_db()
    assert payout.status == "pending"
    assert not reversal_entries(payout)

    sandbox.deliver(created)  # transfer.created: now the transfer id is ours
    payout.refresh_from_db()
    assert payout.status == "paid"
    services.webhook_process(webhook_event_id=row.pk)  # the parked event's retry

    row.refresh_from_db()
    payout.refresh_from_db()
    assert row.status == "processed"
    assert payout.status == "reversed"
    assert payable(payout) == payout.amount
    assert_ledger_clean()


def test_a_reversal_larger_than_the_transfer_is_refused_and_changes_nothing(paid_payout):
    payout = paid_payout
    obj = {
        **SandboxObject.objects.get(kind="transfer").data,
        "amount_reversed": payout.amount + 1,
        "reversed": True,
    }
    body = event_body("evt_reversed_too_much", "transfer.reversed", obj)
    entries_before = JournalEntry.objects.count()
    events_before = Event.objects.count()
    payable_before, gateway_before = payable(payout), gateway_balance(payout)

    response = post_webhook(_client(), body, signed(body))

    assert response.status_code == 200  # stored; the processing refuses it
    row = WebhookEvent.objects.get(event_id="evt_reversed_too_much")
    assert row.status == "failed"
    assert row.last_error.startswith("transfer_reversal_invalid")
    payout.refresh_from_db()
    assert payout.status == "paid"
    assert payout.amount_reversed == 0
    assert JournalEntry.objects.count() == entries_before
    assert Event.objects.count() == events_before
    assert (payable(payout), gateway_balance(payout)) == (payable_before, gateway_before)
    assert operator_mail(payout) == []
    assert_ledger_clean()


@pytest.mark.parametrize(
    "change",
    [
        {"amount_reversed": -1},
        {"amount_reversed": "100"},
        {"currency": "eur", "amount_reversed": 100},
        {"id": "tr_someone_else", "amount_reversed": 100},
    ],
)
def test_a_reversal_that_contradicts_the_payout_is_refused(paid_payout, change):
    payout = paid_payout
    obj = {**SandboxObject.objects.get(kind="transfer").data, **change}
    body = event_body("evt_reversed_bad", "transfer.reversed", obj)

    post_webhook(_client(), body, signed(body))

    assert WebhookEvent.objects.get(event_id="evt_reversed_bad").status == "failed"
    payout.refresh_from_db()
    assert (payout.status, payout.amount_reversed) == ("paid", 0)
    assert not reversal_entries(payout)
    assert not Event.objects.filter(type="payout.reversed").exists()


def test_the_sandbox_refuses_to_reverse_more_than_is_left(paid_payout):
    payout = paid_payout
    GATEWAY.reverse_transfer(transfer_id=payout.gateway_transfer_id, amount=payout.amount - 1)
    sandbox.take_outbox()

    with pytest.raises(InvalidRequest):
        GATEWAY.reverse_transfer(transfer_id=payout.gateway_transfer_id, amount=2)

    transfer = SandboxObject.objects.get(kind="transfer").data
    assert transfer["amount_reversed"] == payout.amount - 1
    assert transfer["reversed"] is False
    assert sandbox.take_outbox() == []


def test_the_database_refuses_an_impossible_reversal(paid_payout):
    payout = paid_payout

    with pytest.raises(IntegrityError), transaction.atomic():
        Payout.objects.filter(pk=payout.pk).update(
            status="reversed", amount_reversed=payout.amount + 1
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        Payout.objects.filter(pk=payout.pk).update(status="reversed", amount_reversed=10)
    with pytest.raises(IntegrityError), transaction.atomic():
        Payout.objects.filter(pk=payout.pk).update(amount_reversed=10)

    payout.refresh_from_db()
    assert (payout.status, payout.amount_reversed) == ("paid", 0)


def test_reconciliation_applies_a_reversal_whose_webhook_was_lost(paid_payout):
    payout = paid_payout
    GATEWAY.reverse_transfer(transfer_id=payout.gateway_transfer_id, amount=12_000)
    sandbox.take_outbox()

    run = services.reconcile(provider="sandbox")

    (finding,) = run.findings.all()
    assert finding.kind == Discrepancy.Kind.STATUS_MISMATCH
    assert finding.object_type == "transfer"
    assert finding.local_id == str(payout.pk)
    assert "gateway reversed 12000, local 0" in finding.detail
    assert finding.is_repaired
    payout.refresh_from_db()
    assert (payout.status, payout.amount_reversed) == ("partially_reversed", 12_000)
    assert Event.objects.filter(type="payout.reversed").count() == 1
    assert services.reconcile(provider="sandbox").discrepancy_count == 0
    assert_ledger_clean()


def test_reconciliation_reports_a_reversal_recorded_beyond_the_gateways(paid_payout):
    payout = paid_payout
    GATEWAY.reverse_transfer(transfer_id=payout.gateway_transfer_id, amount=12_000)
    sandbox.flush()
    stored = SandboxObject.objects.get(kind="transfer")
    stored.data["amount_reversed"] = 2_000  # the gateway now says less was reversed
    stored.save()

    run = services.reconcile(provider="sandbox")

    (finding,) = run.findings.all()
    assert finding.kind == Discrepancy.Kind.AMOUNT_MISMATCH
    assert finding.detail == "gateway reversed 2000, local 12000"
    assert not finding.is_repaired
    payout.refresh_from_db()
    assert payout.amount_reversed == 12_000


def test_check_ledger_reports_a_reversal_without_its_entries(paid_payout):
    payout = paid_payout
    Payout.objects.filter(pk=payout.pk).update(status="partially_reversed", amount_reversed=100)

    assert funding_violations() == [
        f"payout {payout.pk} has reversed 100 but its reversal entries reach 0"
    ]
