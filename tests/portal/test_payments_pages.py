"""Payment pages without JavaScript: adding sandbox cards, default and removal, funding a
milestone from the project page (same service as the API), payment pages only for payer,
payee and operators."""

import pytest

from escrow.models import Milestone
from payments import services as payment_services
from payments.gateways import sandbox
from payments.models import Payment, PaymentMethod
from realtime.sequencer import events_sequence_and_publish
from tests.escrow.factories import MilestoneFactory
from tests.factories import ContractorFactory, HomeownerFactory, OperatorFactory
from tests.portal.test_views import browser_for, csrf_post

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _sandbox(settings):
    settings.PAYMENT_GATEWAY = "sandbox"
    settings.SANDBOX_WEBHOOK_DELIVERY = "outbox"
    sandbox.take_outbox()
    sandbox.clear_faults()
    yield
    sandbox.take_outbox()


@pytest.fixture
def milestone():
    return MilestoneFactory(title="Cabinets", amount=480_000)


def test_sandbox_test_cards_are_offered_as_choices():
    html = browser_for(HomeownerFactory()).get("/payment-methods/").content.decode()
    assert 'value="pm_card_visa"' in html
    assert 'value="pm_card_authenticationRequired"' in html
    assert "card-element" not in html  # no Stripe Elements without Stripe keys


def test_adding_a_card_saves_a_token_and_shows_it():
    user = HomeownerFactory()
    response = csrf_post(
        browser_for(user), "/payment-methods/", {"token": "pm_card_mastercard"}, follow=True
    )
    html = response.content.decode()
    method = PaymentMethod.objects.get(user=user)
    assert (method.brand, method.last4, method.status) == ("mastercard", "4444", "verified")
    assert "mastercard •••• 4444" in html
    assert "Default" in html


def test_a_token_outside_the_choices_is_refused_and_nothing_is_saved():
    user = HomeownerFactory()
    response = csrf_post(browser_for(user), "/payment-methods/", {"token": "pm_evil"})
    assert response.status_code == 400
    assert not PaymentMethod.objects.filter(user=user).exists()


def test_set_default_and_remove():
    user = HomeownerFactory()
    first = payment_services.payment_method_create(user=user, token="pm_card_visa")
    second = payment_services.payment_method_create(user=user, token="pm_card_mastercard")
    client = browser_for(user)
    csrf_post(client, f"/payment-methods/{second.pk}/default")
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.is_default and not first.is_default
    response = csrf_post(client, f"/payment-methods/{first.pk}/remove", follow=True)
    first.refresh_from_db()
    assert first.status == PaymentMethod.Status.REMOVED
    assert "visa •••• 4242" not in response.content.decode().split("Saved cards")[1]


def test_someone_elses_card_cannot_be_changed():
    owner = HomeownerFactory()
    method = payment_services.payment_method_create(user=owner, token="pm_card_visa")
    response = csrf_post(browser_for(HomeownerFactory()), f"/payment-methods/{method.pk}/remove")
    assert response.status_code == 404
    method.refresh_from_db()
    assert method.status == PaymentMethod.Status.VERIFIED


def test_fund_with_a_saved_card_starts_a_payment(milestone):
    homeowner = milestone.project.homeowner
    method = payment_services.payment_method_create(user=homeowner, token="pm_card_visa")
    client = browser_for(homeowner)
    page = client.get(f"/projects/{milestone.project_id}/").content.decode()
    assert f'<option value="{method.pk}" selected>' in page
    response = csrf_post(
        client,
        f"/milestones/{milestone.pk}/fund",
        {"confirm": "yes", "payment_method": method.pk},
    )
    # On a real commit the sequencer numbers the transaction's events before the redirect is
    # followed; the test's wrapping transaction never commits, so run that step here.
    events_sequence_and_publish()
    response = client.get(response["Location"])
    payment = Payment.objects.get(milestone=milestone)
    assert payment.amount == 480_000 and payment.payer == homeowner
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDING
    html = response.content.decode()
    assert "Payment started for “Cabinets”" in html
    assert f'data-payment-status="{payment.pk}"' in html
    # The event's raw name is for machines (an attribute) and operators; people read words.
    assert "Transaction timeline" in html and 'data-event-type="payment.started"' in html
    assert "Payment of " in html and "started" in html


def test_funding_twice_reports_the_conflict_and_creates_no_second_payment(milestone):
    homeowner = milestone.project.homeowner
    method = payment_services.payment_method_create(user=homeowner, token="pm_card_visa")
    client = browser_for(homeowner)
    data = {"confirm": "yes", "payment_method": method.pk}
    csrf_post(client, f"/milestones/{milestone.pk}/fund", data)
    response = csrf_post(client, f"/milestones/{milestone.pk}/fund", data, follow=True)
    assert "Could not fund" in response.content.decode()
    assert Payment.objects.filter(milestone=milestone).count() == 1


def test_fund_without_a_method_asks_for_one_and_changes_nothing(milestone):
    client = browser_for(milestone.project.homeowner)
    response = csrf_post(client, f"/milestones/{milestone.pk}/fund", {"confirm": "yes"})
    assert response.status_code == 400
    assert "Add a card first" in response.content.decode()
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.PENDING
    assert not Payment.objects.exists()


def test_fund_with_someone_elses_card_is_refused(milestone):
    other = payment_services.payment_method_create(user=HomeownerFactory(), token="pm_card_visa")
    payment_services.payment_method_create(user=milestone.project.homeowner, token="pm_card_visa")
    client = browser_for(milestone.project.homeowner)
    response = csrf_post(
        client, f"/milestones/{milestone.pk}/fund", {"confirm": "yes", "payment_method": other.pk}
    )
    assert response.status_code == 400
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.PENDING
    assert not Payment.objects.exists()


def test_payment_page_for_parties_and_operators_only(milestone):
    homeowner = milestone.project.homeowner
    method = payment_services.payment_method_create(user=homeowner, token="pm_card_visa")
    payment = payment_services.payment_fund(
        milestone_id=milestone.pk, payment_method_id=method.pk, actor=homeowner
    )
    for user in (homeowner, milestone.project.contractor, OperatorFactory()):
        response = browser_for(user).get(f"/payments/{payment.pk}/")
        assert response.status_code == 200
        assert "Transaction timeline" in response.content.decode()
    assert browser_for(ContractorFactory()).get(f"/payments/{payment.pk}/").status_code == 404


def test_dashboard_shows_the_pending_payment_with_steps(milestone):
    homeowner = milestone.project.homeowner
    method = payment_services.payment_method_create(user=homeowner, token="pm_card_visa")
    payment = payment_services.payment_fund(
        milestone_id=milestone.pk, payment_method_id=method.pk, actor=homeowner
    )
    html = browser_for(homeowner).get("/").content.decode()
    assert f"Payment #{payment.pk}" in html
    assert 'aria-label="Payment progress"' in html


def test_declined_card_shows_the_reason_and_the_milestone_can_be_funded_again(
    milestone, django_capture_on_commit_callbacks
):
    homeowner = milestone.project.homeowner
    method = payment_services.payment_method_create(user=homeowner, token="pm_card_chargeDeclined")
    client = browser_for(homeowner)
    with django_capture_on_commit_callbacks(execute=True):
        csrf_post(
            client,
            f"/milestones/{milestone.pk}/fund",
            {"confirm": "yes", "payment_method": method.pk},
        )
    payment = Payment.objects.get(milestone=milestone)
    milestone.refresh_from_db()
    assert payment.status in {"failed", "declined"}
    assert milestone.status == Milestone.Status.PENDING
    html = client.get(f"/projects/{milestone.project_id}/").content.decode()
    assert "Failed: Your card was declined." in html
    assert f'action="/milestones/{milestone.pk}/fund"' in html


def test_with_stripe_keys_the_page_offers_stripe_elements_not_test_cards(settings):
    settings.PAYMENT_GATEWAY = "stripe"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_portal"
    html = browser_for(HomeownerFactory()).get("/payment-methods/").content.decode()
    assert 'data-stripe-key="pk_test_portal"' in html
    assert 'id="card-element"' in html
    assert "https://js.stripe.com/v3/" in html and "js/stripe-card.js" in html
    assert 'value="pm_card_visa"' not in html


def test_stripe_mode_refuses_anything_but_a_payment_method_id(settings):
    settings.PAYMENT_GATEWAY = "stripe"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_portal"
    user = HomeownerFactory()
    response = csrf_post(browser_for(user), "/payment-methods/", {"token": "4242424242424242"})
    assert response.status_code == 400
    assert not PaymentMethod.objects.filter(user=user).exists()
