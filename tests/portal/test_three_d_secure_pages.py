"""3-D Secure in the portal, without JavaScript on the sandbox: the payer is shown the
challenge on the project and payment pages, completes it on the sandbox's page and comes back;
the payee never sees it. With the Stripe gateway the same place holds the Stripe.js button,
and only then is Stripe.js loaded."""

from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest

from escrow.models import Milestone
from payments import services as payment_services
from payments.gateways import sandbox
from payments.models import Payment
from tests.escrow.factories import MilestoneFactory
from tests.portal.test_views import browser_for, csrf_post

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _sandbox(settings):
    settings.PAYMENT_GATEWAY = "sandbox"
    settings.SANDBOX_WEBHOOK_DELIVERY = "outbox"
    settings.SANDBOX_AUTHENTICATION = "challenge"
    sandbox.take_outbox()
    yield
    sandbox.take_outbox()


@pytest.fixture
def milestone():
    return MilestoneFactory(title="Windows", amount=120_000)


def fund_from_the_portal(client, milestone) -> Payment:
    homeowner = milestone.project.homeowner
    method = payment_services.payment_method_create(
        user=homeowner, token="pm_card_authenticationRequired"
    )
    response = csrf_post(
        client, f"/milestones/{milestone.pk}/fund", {"confirm": "yes", "payment_method": method.pk}
    )
    assert response.status_code == 302
    return Payment.objects.get(milestone=milestone)


def challenge_link(html: str) -> str:
    start = html.index("data-challenge-link") - 300
    href = html[start:].split('href="', 1)[1].split('"', 1)[0]
    return unescape(href)


def test_the_payer_is_shown_the_challenge_and_the_payee_is_not(milestone):
    """After funding with a card that needs 3-D Secure, the payer's project and payment pages
    offer "Complete 3-D Secure" (the sandbox's page, coming back to where they were); the
    contractor's pages show the payment verifying but neither the link nor the secret."""
    homeowner = browser_for(milestone.project.homeowner)
    payment = fund_from_the_portal(homeowner, milestone)

    project_page = homeowner.get(f"/projects/{milestone.project_id}/").content.decode()
    payment_page = homeowner.get(f"/payments/{payment.pk}/").content.decode()
    contractor = browser_for(milestone.project.contractor)
    payee_pages = contractor.get(f"/projects/{milestone.project_id}/").content.decode()
    payee_pages += contractor.get(f"/payments/{payment.pk}/").content.decode()

    assert payment.status == "verifying"
    assert "Your bank asks you to confirm the payment for “Windows”" in project_page
    link = urlsplit(challenge_link(payment_page))
    assert link.path == f"/sandbox/3ds/{payment.gateway_payment_id}/"
    assert parse_qs(link.query)["return_url"] == [f"/payments/{payment.pk}/"]
    project_link = urlsplit(challenge_link(project_page))
    assert parse_qs(project_link.query)["return_url"] == [
        f"/projects/{milestone.project_id}/#milestone-{milestone.pk}"
    ]
    assert "Complete 3-D Secure" not in payee_pages
    assert payment.gateway_client_secret not in payee_pages
    assert "js.stripe.com" not in project_page + payment_page


def test_passing_the_sandbox_challenge_returns_to_the_payment_and_funds_it(milestone):
    """The payer follows the link, passes the check, is sent back to the payment page, and
    once the sandbox's webhooks arrive the payment is completed and the challenge is gone."""
    homeowner = browser_for(milestone.project.homeowner)
    payment = fund_from_the_portal(homeowner, milestone)
    link = urlsplit(challenge_link(homeowner.get(f"/payments/{payment.pk}/").content.decode()))
    query = {key: values[0] for key, values in parse_qs(link.query).items()}

    page = homeowner.get(link.path, query)
    answer = homeowner.post(link.path, {**query, "result": "pass"})
    sandbox.flush()

    assert page.status_code == 200 and "1,200.00 USD" in page.content.decode()
    assert answer.status_code == 302 and answer["Location"] == f"/payments/{payment.pk}/"
    payment.refresh_from_db()
    assert payment.status == "completed"
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDED
    assert "Complete 3-D Secure" not in homeowner.get(answer["Location"]).content.decode()


def test_failing_the_sandbox_challenge_shows_why_and_offers_funding_again(milestone):
    """The payer fails the check: the project page shows the rejection and the milestone can
    be funded again."""
    homeowner = browser_for(milestone.project.homeowner)
    payment = fund_from_the_portal(homeowner, milestone)
    link = urlsplit(challenge_link(homeowner.get(f"/payments/{payment.pk}/").content.decode()))
    query = {key: values[0] for key, values in parse_qs(link.query).items()}

    homeowner.post(link.path, {**query, "result": "fail"})
    sandbox.flush()

    html = homeowner.get(f"/projects/{milestone.project_id}/").content.decode()
    assert "Failed: The provided PaymentMethod has failed authentication." in html
    assert f'action="/milestones/{milestone.pk}/fund"' in html
    assert "Complete 3-D Secure" not in html


def test_with_the_stripe_gateway_the_page_loads_stripe_js_for_the_challenge(milestone, settings):
    """A Stripe payment waiting for 3-D Secure (use_stripe_sdk): the payer's page carries the
    Stripe.js button with the client secret and loads Stripe.js and stripe-3ds.js; the
    payee's page has no secret."""
    homeowner = browser_for(milestone.project.homeowner)
    payment = fund_from_the_portal(homeowner, milestone)
    Payment.objects.filter(pk=payment.pk).update(
        provider="stripe",
        next_action={"type": "use_stripe_sdk"},
        gateway_client_secret="pi_123_secret_abc",
    )
    settings.PAYMENT_GATEWAY = "stripe"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_portal"

    response = homeowner.get(f"/payments/{payment.pk}/")
    payee_page = browser_for(milestone.project.contractor).get(f"/payments/{payment.pk}/")

    html = response.content.decode()
    assert 'data-stripe-3ds data-client-secret="pi_123_secret_abc"' in html
    assert 'data-stripe-key="pk_test_portal"' in html
    assert '<script src="https://js.stripe.com/v3/"></script>' in html
    assert "js/stripe-3ds.js" in html
    assert "pi_123_secret_abc" not in payee_page.content.decode()
