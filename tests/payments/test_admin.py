"""The operators' admin pages for payments render and their actions go through services."""

import pytest

from payments.gateways import sandbox
from payments.models import Payout
from payments.services import reconcile
from tests.payments.helpers import fund

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client(client, operator):
    client.force_login(operator.user)
    return client


def test_every_payments_admin_page_renders(admin_client, homeowner, contractor, milestone):
    payment = fund(milestone, "pm_card_authenticationRequired")
    sandbox.flush()
    contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
    homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")
    run = reconcile(provider="sandbox")
    payout = Payout.objects.get()

    for url in [
        "/admin/payments/payment/",
        f"/admin/payments/payment/{payment.pk}/change/",
        "/admin/payments/paymentmethod/",
        "/admin/payments/refund/",
        "/admin/payments/payout/",
        f"/admin/payments/payout/{payout.pk}/change/",
        "/admin/payments/webhookevent/",
        "/admin/payments/circuitbreaker/",
        "/admin/payments/reconciliationrun/",
        f"/admin/payments/reconciliationrun/{run.pk}/change/",
        "/admin/payments/discrepancy/",
        "/admin/payments/payoutaccount/",
    ]:
        response = admin_client.get(url)
        assert response.status_code == 200, url


def test_the_payment_page_shows_attempts_and_timeline(admin_client, milestone):
    payment = fund(milestone)

    response = admin_client.get(f"/admin/payments/payment/{payment.pk}/change/")

    assert f"payment:{payment.pk}:authorize".encode() in response.content
    assert b"payment.completed" in response.content


def test_a_homeowner_cannot_open_the_admin(client, homeowner):
    client.force_login(homeowner.user)

    assert client.get("/admin/payments/payment/").status_code == 302


def test_saving_a_payout_account_in_the_admin_sends_the_waiting_payout(
    admin_client, homeowner, contractor, milestone
):
    """The admin's add form goes through payout_account_set outside the admin's own
    transaction (the service is durable), so a payout waiting for an account is paid."""
    from unittest import mock

    from payments.models import PayoutAccount

    fund(milestone)
    with mock.patch.object(sandbox.SandboxGateway, "payout_destination_for", return_value=""):
        contractor.post(f"/api/v1/milestones/{milestone.pk}/submit")
        homeowner.post(f"/api/v1/milestones/{milestone.pk}/approve")
    payout = Payout.objects.get(milestone=milestone)
    assert payout.status == "needs_account"

    response = admin_client.post(
        "/admin/payments/payoutaccount/add/",
        {"user": contractor.user.pk, "provider": "sandbox", "account_id": "acct_from_admin"},
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    account = PayoutAccount.objects.get(user=contractor.user)
    assert account.account_id == "acct_from_admin"
    payout.refresh_from_db()
    assert payout.status == "paid"
    assert payout.destination == "acct_from_admin"


def test_changing_a_payout_account_in_the_admin_keeps_one_row(admin_client, contractor):
    """An edit changes the account id through the service; user and provider are fixed."""
    from payments import services
    from payments.models import PayoutAccount

    account = services.payout_account_set(
        user=contractor.user, provider="sandbox", account_id="acct_old"
    )

    response = admin_client.post(
        f"/admin/payments/payoutaccount/{account.pk}/change/", {"account_id": "acct_new"}
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert list(PayoutAccount.objects.values_list("pk", "provider", "account_id")) == [
        (account.pk, "sandbox", "acct_new")
    ]


def test_the_payment_page_never_shows_a_3d_secure_client_secret(admin_client, milestone, settings):
    """Operators see a verifying payment but not the client secret that could confirm it."""
    settings.SANDBOX_AUTHENTICATION = "challenge"
    payment = fund(milestone, "pm_card_authenticationRequired")
    assert payment.status == "verifying" and payment.gateway_client_secret

    html = admin_client.get(f"/admin/payments/payment/{payment.pk}/change/").content.decode()

    assert payment.gateway_client_secret not in html
