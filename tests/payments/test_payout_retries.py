"""Paying a contractor again: a failed or reversed payout leaves its money owed (payable), and
an operator's retry creates one new payout for it, which goes payable → in transit → gateway
like the first; never twice, whoever retries and however often."""

import threading
from concurrent.futures import ThreadPoolExecutor
from io import StringIO
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connections, transaction

from escrow import ledger
from escrow.exceptions import IllegalTransition
from escrow.models import JournalEntry
from payments import services
from payments.exceptions import PayoutNotFound, PayoutRetryRefused
from payments.gateways import sandbox
from payments.invariants import funding_violations
from payments.models import Payout, SandboxObject
from realtime.models import Event
from tests.conftest import requires_postgres
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db(transaction=True)

GATEWAY = sandbox.SandboxGateway()


def release(homeowner, contractor, milestone):
    assert contractor.post(f"/api/v1/milestones/{milestone.pk}/submit").status_code == 200
    assert homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve").status_code == 200


def payable(payout):
    return ledger.balance(ledger.payable_account(payout.payee_id, payout.currency))


def in_transit():
    return ledger.balance(ledger.in_transit_account("usd"))


def gateway_balance():
    return ledger.balance(ledger.gateway_account("sandbox", "usd"))


def assert_ledger_clean():
    assert funding_violations() == []
    out = StringIO()
    call_command("check_ledger", stdout=out)
    assert "ok" in out.getvalue()


def references(payout):
    return set(
        JournalEntry.objects.filter(reference__in=[f"payout:{payout.pk}",
                                                   f"payout-paid:{payout.pk}",
                                                   f"payout-failed:{payout.pk}"])
        .values_list("reference", flat=True)
    )  # fmt: skip


@pytest.fixture
def failed_payout(homeowner, contractor, milestone):
    """A released milestone whose transfer the gateway refused for good (a destination that
    does not exist): the payout failed and its money is back in the contractor's payable."""
    fund(milestone)
    with mock.patch.object(
        sandbox.SandboxGateway, "payout_destination_for", return_value="closed_account"
    ):
        release(homeowner, contractor, milestone)
    sandbox.flush()
    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "failed"
    assert payable(payout) == payout.amount
    assert in_transit() == 0
    return payout


@pytest.fixture
def paid_payout(homeowner, contractor, milestone):
    fund(milestone)
    release(homeowner, contractor, milestone)
    sandbox.flush()
    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "paid"
    return payout


def test_a_failed_payout_is_paid_again_by_a_new_payout(failed_payout, operator):
    """The retry moves the owed money payable → in transit → gateway under the new payout's
    own ledger references and transfer key; the failed payout stays as it was."""
    gateway_before = gateway_balance()

    retried = services.payout_retry(payout_id=failed_payout.pk, actor=operator.user)

    retried.refresh_from_db()
    assert retried.pk != failed_payout.pk
    assert retried.status == "paid"
    assert retried.retry_of_id == failed_payout.pk
    assert retried.amount == failed_payout.amount
    assert (retried.milestone_id, retried.payee_id, retried.payment_id) == (
        failed_payout.milestone_id,
        failed_payout.payee_id,
        failed_payout.payment_id,
    )
    assert references(retried) == {f"payout:{retried.pk}", f"payout-paid:{retried.pk}"}
    assert payable(retried) == 0
    assert in_transit() == 0
    assert gateway_balance() == gateway_before - retried.amount
    transfer = SandboxObject.objects.get(kind="transfer").data
    assert transfer["amount"] == retried.amount
    assert transfer["metadata"]["payout_id"] == retried.pk
    started = Event.objects.filter(type="payout.started", aggregate_id=str(retried.pk)).get()
    assert started.data["retry_of"] == failed_payout.pk
    assert Event.objects.filter(type="payout.paid", aggregate_id=str(retried.pk)).count() == 1
    failed_payout.refresh_from_db()
    assert failed_payout.status == "failed"
    assert_ledger_clean()


def test_retrying_the_same_failed_payout_twice_makes_one_new_payout(failed_payout, operator):
    first = services.payout_retry(payout_id=failed_payout.pk, actor=operator.user)

    second = services.payout_retry(payout_id=failed_payout.pk, actor=operator.user)

    assert second.pk == first.pk
    assert Payout.objects.filter(milestone_id=failed_payout.milestone_id).count() == 2
    assert SandboxObject.objects.filter(kind="transfer").count() == 1
    assert JournalEntry.objects.filter(kind="payout_started").count() == 2
    assert payable(failed_payout) == 0
    assert_ledger_clean()


def test_a_retry_that_fails_again_can_itself_be_retried(failed_payout, operator):
    with mock.patch.object(
        sandbox.SandboxGateway, "payout_destination_for", return_value="closed_account"
    ):
        second = services.payout_retry(payout_id=failed_payout.pk, actor=operator.user)
    second.refresh_from_db()
    assert second.status == "failed"
    assert payable(second) == second.amount

    third = services.payout_retry(payout_id=second.pk, actor=operator.user)

    third.refresh_from_db()
    assert (third.status, third.retry_of_id, third.amount) == ("paid", second.pk, second.amount)
    assert services.payout_retry(payout_id=failed_payout.pk, actor=operator.user).pk == second.pk
    assert payable(third) == 0
    assert_ledger_clean()


def test_a_fully_reversed_payout_is_paid_again(paid_payout, operator, contractor):
    GATEWAY.reverse_transfer(transfer_id=paid_payout.gateway_transfer_id)
    sandbox.flush()
    paid_payout.refresh_from_db()
    assert paid_payout.status == "reversed"
    assert payable(paid_payout) == paid_payout.amount

    retried = services.payout_retry(payout_id=paid_payout.pk, actor=operator.user)

    retried.refresh_from_db()
    assert (retried.status, retried.amount) == ("paid", paid_payout.amount)
    assert payable(paid_payout) == 0
    assert in_transit() == 0
    assert SandboxObject.objects.filter(kind="transfer").count() == 2
    balances = contractor.get("/api/v1/balances").json()["usd"]
    assert (balances["payable"], balances["paid_out"]) == (0, paid_payout.amount)
    assert_ledger_clean()


def test_a_reversal_that_grows_after_a_retry_is_paid_again_for_the_growth_only(
    paid_payout, operator
):
    """Stripe's amount_reversed is cumulative: the second retry pays what was reversed since
    the first, and a third retry with nothing new returns the second."""
    GATEWAY.reverse_transfer(transfer_id=paid_payout.gateway_transfer_id, amount=300)
    sandbox.flush()
    first = services.payout_retry(payout_id=paid_payout.pk, actor=operator.user)
    GATEWAY.reverse_transfer(transfer_id=paid_payout.gateway_transfer_id, amount=200)
    sandbox.flush()

    second = services.payout_retry(payout_id=paid_payout.pk, actor=operator.user)
    third = services.payout_retry(payout_id=paid_payout.pk, actor=operator.user)

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.amount, first.status, first.retry_of_amount_owed) == (300, "paid", 300)
    assert (second.amount, second.status, second.retry_of_amount_owed) == (200, "paid", 500)
    assert third.pk == second.pk
    assert payable(paid_payout) == 0
    assert_ledger_clean()


def test_a_paid_payout_owes_nothing_and_is_not_retried(paid_payout, operator):
    events_before = Event.objects.count()

    with pytest.raises(IllegalTransition, match="is paid"):
        services.payout_retry(payout_id=paid_payout.pk, actor=operator.user)

    assert Payout.objects.count() == 1
    assert Event.objects.count() == events_before
    assert JournalEntry.objects.filter(kind="payout_started").count() == 1


def test_a_retry_is_refused_when_payable_no_longer_holds_the_money(failed_payout, operator):
    """An operator moved the owed money elsewhere (an adjustment): the retry would overdraw
    the contractor's payable, so it is refused and writes nothing."""
    from escrow.exceptions import InsufficientFunds

    with transaction.atomic():
        ledger.post_entry(
            reference="adjustment:test-drain",
            kind=JournalEntry.Kind.ADJUSTMENT,
            currency="usd",
            legs=[
                ledger.debit(
                    ledger.payable_spec(failed_payout.payee_id, "usd"), failed_payout.amount
                ),
                ledger.credit(ledger.revenue_spec("usd"), failed_payout.amount),
            ],
        )
    events_before = Event.objects.count()

    with pytest.raises(InsufficientFunds):
        services.payout_retry(payout_id=failed_payout.pk, actor=operator.user)

    assert Payout.objects.count() == 1
    assert Event.objects.count() == events_before
    assert in_transit() == 0
    assert SandboxObject.objects.filter(kind="transfer").count() == 0


def test_only_an_operator_may_retry(failed_payout, contractor, homeowner):
    for actor in (contractor.user, homeowner.user):
        with pytest.raises(PayoutNotFound):
            services.payout_retry(payout_id=failed_payout.pk, actor=actor)

    assert Payout.objects.count() == 1
    assert payable(failed_payout) == failed_payout.amount


def test_a_retry_waits_while_another_payout_of_the_milestone_is_on_its_way(paid_payout, operator):
    """One active payout per milestone: while the first retry's transfer is still pending
    (the gateway is down), a retry of a newer reversal step is refused and changes nothing."""
    GATEWAY.reverse_transfer(transfer_id=paid_payout.gateway_transfer_id, amount=300)
    sandbox.flush()
    sandbox.inject_fault("transfer", "server_error")
    pending = services.payout_retry(payout_id=paid_payout.pk, actor=operator.user)
    pending.refresh_from_db()
    assert pending.status == "pending"
    GATEWAY.reverse_transfer(transfer_id=paid_payout.gateway_transfer_id, amount=200)
    sandbox.flush()
    owed_before = payable(paid_payout)

    with pytest.raises(PayoutRetryRefused, match=f"Payout {pending.pk} .* still pending"):
        services.payout_retry(payout_id=paid_payout.pk, actor=operator.user)

    assert Payout.objects.count() == 2
    assert payable(paid_payout) == owed_before == 200
    services.payout_process(payout_id=pending.pk)
    later = services.payout_retry(payout_id=paid_payout.pk, actor=operator.user)
    later.refresh_from_db()
    assert (later.amount, later.status) == (200, "paid")
    assert_ledger_clean()


def test_retrying_a_waiting_payout_sends_its_own_transfer_again(
    homeowner, contractor, milestone, operator
):
    fund(milestone)
    sandbox.inject_fault("transfer", "server_error")
    release(homeowner, contractor, milestone)
    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "pending"

    retried = services.payout_retry(payout_id=payout.pk, actor=operator.user)

    assert retried.pk == payout.pk
    payout.refresh_from_db()
    assert payout.status == "paid"
    assert Payout.objects.count() == 1


def test_the_database_allows_one_active_payout_per_milestone(failed_payout):
    retry = Payout.objects.create(
        milestone_id=failed_payout.milestone_id,
        payee_id=failed_payout.payee_id,
        provider="sandbox",
        amount=1,
        currency="usd",
        retry_of=failed_payout,
        retry_of_amount_owed=1,
    )

    with pytest.raises(IntegrityError), transaction.atomic():
        Payout.objects.create(
            milestone_id=failed_payout.milestone_id,
            payee_id=failed_payout.payee_id,
            provider="sandbox",
            amount=1,
            currency="usd",
            retry_of=failed_payout,
            retry_of_amount_owed=2,
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        Payout.objects.filter(pk=retry.pk).update(status="failed")
        Payout.objects.create(
            milestone_id=failed_payout.milestone_id,
            payee_id=failed_payout.payee_id,
            provider="sandbox",
            amount=1,
            currency="usd",
            retry_of=failed_payout,
            retry_of_amount_owed=1,
        )
    assert Payout.objects.count() == 2


@requires_postgres
@pytest.mark.postgres
def test_two_operators_retrying_at_once_make_one_new_payout(failed_payout, operator):
    """Real threads on PostgreSQL: both retries return the same new payout, paid once."""
    workers = 4
    barrier = threading.Barrier(workers)

    def retry(_):
        barrier.wait()
        try:
            return services.payout_retry(payout_id=failed_payout.pk, actor=operator.user).pk
        finally:
            connections.close_all()

    with ThreadPoolExecutor(workers) as pool:
        ids = list(pool.map(retry, range(workers)))

    assert len(set(ids)) == 1
    retried = Payout.objects.get(pk=ids[0])
    assert (retried.status, retried.retry_of_id) == ("paid", failed_payout.pk)
    assert Payout.objects.count() == 2
    assert SandboxObject.objects.filter(kind="transfer").count() == 1
    assert payable(failed_payout) == 0
    assert_ledger_clean()


def test_the_admins_retry_action_pays_a_failed_payout_again(client, operator, failed_payout):
    client.force_login(operator.user)

    response = client.post(
        "/admin/payments/payout/",
        {"action": "retry", "_selected_action": [failed_payout.pk]},
        follow=True,
    )

    assert response.status_code == 200
    retried = Payout.objects.get(retry_of=failed_payout)
    assert retried.status == "paid"
    assert f"paid again by payout {retried.pk}" in response.content.decode()
    assert client.get(f"/admin/payments/payout/{failed_payout.pk}/change/").status_code == 200
    assert_ledger_clean()


def test_the_portal_and_the_attention_panel_show_the_payout_that_paid_it_again(
    failed_payout, operator
):
    from portal.admin_site import attention_signals
    from portal.payments_bridge import payouts_by_milestone

    def waiting():
        [signal] = [s for s in attention_signals() if s.label.startswith("Payouts waiting")]
        return signal.count

    assert waiting() == 1

    retried = services.payout_retry(payout_id=failed_payout.pk, actor=operator.user)

    shown = payouts_by_milestone(user=operator.user, milestone_ids=[failed_payout.milestone_id])
    assert shown[failed_payout.milestone_id].pk == retried.pk
    assert waiting() == 0


def test_check_ledger_reports_a_retry_that_pays_more_than_was_owed(failed_payout, operator):
    retried = services.payout_retry(payout_id=failed_payout.pk, actor=operator.user)
    Payout.objects.filter(pk=retried.pk).update(amount=retried.amount + 1)

    problems = funding_violations()

    assert problems == [
        f"payout {failed_payout.pk}'s retries pay {retried.amount + 1} in all but cover "
        f"{retried.amount}"
    ]
