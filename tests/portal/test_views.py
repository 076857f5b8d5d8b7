"""Portal pages without JavaScript: who sees what, which actions are offered, that the forms
call the escrow services, and that domain errors come back as readable messages."""

import re

import pytest
from django.conf import settings
from django.test import Client

from escrow.models import Milestone, Project
from portal import presenters
from realtime.models import Event
from realtime.sequencer import events_sequence_and_publish
from tests.escrow.factories import DraftProjectFactory, MilestoneFactory, fund
from tests.factories import ContractorFactory, HomeownerFactory, OperatorFactory

pytestmark = pytest.mark.django_db


def browser_for(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_post(client: Client, url: str, data: dict | None = None, **kwargs):
    """Post like a browser: fetch a page to get the CSRF cookie, send the token back."""
    client.get("/")
    token = client.cookies["csrftoken"].value
    return client.post(url, {**(data or {}), "csrfmiddlewaretoken": token}, **kwargs)


@pytest.fixture
def milestone():
    return MilestoneFactory(title="Rough-in", amount=250_000)


@pytest.fixture
def project(milestone):
    return milestone.project


def test_anonymous_is_sent_to_login_from_every_page(client, project, milestone):
    for url in [
        "/",
        "/fragments/dashboard",
        f"/projects/{project.pk}/",
        f"/projects/{project.pk}/fragment",
        f"/milestones/{milestone.pk}/approve",
        "/payment-methods/",
        "/notifications/",
    ]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/"), url


def test_dashboard_shows_balances_projects_chart_and_live_hooks(project, milestone):
    fund(milestone)
    events_sequence_and_publish()  # what the commit's callback does first
    response = browser_for(project.homeowner).get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Budget utilization per project" in html
    assert "2,500.00 USD" in html  # held in escrow
    assert project.title in html
    assert "<svg" in html and 'role="img"' in html
    assert f'data-channels="user.{project.homeowner_id}.payments' in html
    last = Event.objects.order_by("-position").first().position
    assert f'data-last-event-id="{last}"' in html
    assert 'type="module"' in html and "js/live.js" in html


def test_dashboard_for_contractor_shows_earnings_and_review_countdown(project, milestone):
    fund(milestone)
    from escrow import services

    services.milestone_submit(milestone_id=milestone.pk, actor=project.contractor)
    html = browser_for(project.contractor).get("/").content.decode()
    assert "Earnings per project" in html
    assert "Awaiting approval" in html
    assert "data-countdown" in html


def test_dashboard_lists_payments_due_with_countdown(project):
    MilestoneFactory(project=project, title="Tiles", due_date="2030-01-01")
    html = browser_for(project.homeowner).get("/").content.decode()
    assert "Payments due" in html
    assert re.search(r"due in \d+ days", html)


def test_recent_activity_shows_only_the_viewers_events(project, milestone):
    fund(milestone)
    other = MilestoneFactory(title="Someone else's secret")
    fund(other)
    events_sequence_and_publish()  # what the commits' callbacks do first
    html = browser_for(project.homeowner).get("/").content.decode()
    assert "Rough-in" in html
    assert "Someone else&#x27;s secret" not in html and "Someone else's secret" not in html


def test_project_page_is_404_for_strangers_and_visible_to_parties_and_operators(project):
    stranger = HomeownerFactory()
    assert browser_for(stranger).get(f"/projects/{project.pk}/").status_code == 404
    assert browser_for(stranger).get(f"/projects/{project.pk}/fragment").status_code == 404
    assert browser_for(ContractorFactory()).get(f"/projects/{project.pk}/").status_code == 404
    for user in (project.homeowner, project.contractor, OperatorFactory()):
        assert browser_for(user).get(f"/projects/{project.pk}/").status_code == 200


def test_project_page_shows_tracker_and_homeowner_actions(project, milestone):
    html = browser_for(project.homeowner).get(f"/projects/{project.pk}/").content.decode()
    assert f'data-milestone-status="{milestone.pk}"' in html
    assert "Awaiting funding" in html
    assert 'aria-current="step"' in html
    assert f'action="/milestones/{milestone.pk}/fund"' in html
    assert f'action="/milestones/{milestone.pk}/submit"' not in html


def test_contractor_is_offered_submit_once_funded(project, milestone):
    fund(milestone)
    html = browser_for(project.contractor).get(f"/projects/{project.pk}/").content.decode()
    assert f'action="/milestones/{milestone.pk}/submit"' in html
    assert f'action="/milestones/{milestone.pk}/approve"' not in html
    assert f'action="/milestones/{milestone.pk}/refund"' not in html


def test_every_form_carries_a_csrf_token(project, milestone):
    fund(milestone)
    html = browser_for(project.homeowner).get(f"/projects/{project.pk}/").content.decode()
    forms = re.findall(r"<form[^>]*method=\"post\".*?</form>", html, flags=re.S)
    assert forms
    assert all("csrfmiddlewaretoken" in form for form in forms)


def test_post_without_csrf_token_is_refused_and_changes_nothing(project, milestone):
    fund(milestone)
    client = browser_for(project.contractor)
    response = client.post(f"/milestones/{milestone.pk}/submit")
    assert response.status_code == 403
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDED


def test_submit_calls_the_service_and_says_so(project, milestone):
    fund(milestone)
    client = browser_for(project.contractor)
    response = csrf_post(client, f"/milestones/{milestone.pk}/submit", follow=True)
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.SUBMITTED
    assert "is now: Work submitted" in response.content.decode()
    assert Event.objects.filter(type="milestone.status_updated", data__new_status="submitted")


def test_approve_needs_confirmation_first(project, milestone):
    fund(milestone)
    from escrow import services

    services.milestone_submit(milestone_id=milestone.pk, actor=project.contractor)
    client = browser_for(project.homeowner)
    response = csrf_post(client, f"/milestones/{milestone.pk}/approve")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Release 2,500.00 USD from escrow to the contractor?" in html
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.SUBMITTED

    response = csrf_post(
        client, f"/milestones/{milestone.pk}/approve", {"confirm": "yes"}, follow=True
    )
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.RELEASED
    assert "is now: Released" in response.content.decode()


def test_confirm_page_is_reachable_by_get_and_changes_nothing(project, milestone):
    fund(milestone)
    response = browser_for(project.homeowner).get(f"/milestones/{milestone.pk}/refund")
    assert response.status_code == 200
    assert "Return 2,500.00 USD from escrow" in response.content.decode()
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDED


def test_illegal_action_shows_the_domain_error_and_changes_nothing(project, milestone):
    client = browser_for(project.homeowner)
    events_before = Event.objects.count()
    response = csrf_post(
        client, f"/milestones/{milestone.pk}/approve", {"confirm": "yes"}, follow=True
    )
    html = response.content.decode()
    assert "Could not approve" in html
    assert "is pending; it cannot become approved" in html
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.PENDING
    assert Event.objects.count() == events_before


def test_wrong_party_gets_a_clear_error_not_a_change(project, milestone):
    fund(milestone)
    client = browser_for(project.homeowner)
    response = csrf_post(client, f"/milestones/{milestone.pk}/submit", follow=True)
    assert "Only the project&#x27;s contractor may do this." in response.content.decode()
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDED


def test_strangers_actions_are_404_and_change_nothing(project, milestone):
    fund(milestone)
    client = browser_for(ContractorFactory())
    response = csrf_post(client, f"/milestones/{milestone.pk}/submit")
    assert response.status_code == 404
    response = client.get(f"/milestones/{milestone.pk}/refund")
    assert response.status_code == 404
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.FUNDED


def test_unknown_action_is_404(project, milestone):
    assert (
        browser_for(project.homeowner).get(f"/milestones/{milestone.pk}/explode").status_code == 404
    )


def test_signing_activates_the_project_when_both_signed():
    project = DraftProjectFactory()
    MilestoneFactory(project=project)
    html = browser_for(project.homeowner).get(f"/projects/{project.pk}/").content.decode()
    assert "Sign the contract" in html
    csrf_post(browser_for(project.homeowner), f"/projects/{project.pk}/sign")
    response = csrf_post(
        browser_for(project.contractor), f"/projects/{project.pk}/sign", follow=True
    )
    project.refresh_from_db()
    assert project.status == Project.Status.ACTIVE
    assert "Project status: Active" in response.content.decode()


def test_stranger_cannot_sign(project):
    draft = DraftProjectFactory()
    response = csrf_post(browser_for(HomeownerFactory()), f"/projects/{draft.pk}/sign")
    assert response.status_code == 404
    draft.refresh_from_db()
    assert draft.homeowner_signed_at is None and draft.contractor_signed_at is None


def test_fragment_is_the_live_region_only(project, milestone):
    response = browser_for(project.homeowner).get(f"/projects/{project.pk}/fragment")
    html = response.content.decode().strip()
    assert html.startswith('<div id="project-live"')
    assert "<html" not in html
    assert "no-cache" in response["Cache-Control"] or "no-store" in response["Cache-Control"]


def test_pages_carry_the_strict_csp_and_no_inline_script_or_style(project, milestone):
    fund(milestone)
    homeowner, operator = browser_for(project.homeowner), browser_for(OperatorFactory())
    for url in [
        "/",
        f"/projects/{project.pk}/",
        f"/milestones/{milestone.pk}/refund",
        "/payment-methods/",
        "/notifications/",
        "/accounts/password/",
        "/admin/",
    ]:
        response = (operator if url.startswith("/admin/") else homeowner).get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert "script-src 'self'" in response["Content-Security-Policy"], url
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), url
        assert " style=" not in html and "<style" not in html, url
        assert not re.search(r"\son[a-z]+=", html), url


def test_live_js_labels_match_the_server_labels():
    source = (settings.BASE_DIR / "static/js/live.js").read_text(encoding="utf-8")
    for status, label in presenters.STATUS_LABELS.items():
        assert f'"{status}": "{label}"' in source, status


def test_operator_sees_refund_on_submitted_milestone(project, milestone):
    fund(milestone)
    from escrow import services

    services.milestone_submit(milestone_id=milestone.pk, actor=project.contractor)
    operator = OperatorFactory()
    html = browser_for(operator).get(f"/projects/{project.pk}/").content.decode()
    assert f'action="/milestones/{milestone.pk}/refund"' in html
    csrf_post(browser_for(operator), f"/milestones/{milestone.pk}/refund", {"confirm": "yes"})
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.REFUNDED


def test_event_summaries_read_as_sentences():
    data = {"title": "Tiling", "amount": 250_000, "currency": "usd", "new_status": "submitted"}
    assert presenters.event_summary("milestone.status_updated", data) == (
        "Milestone “Tiling”: Work submitted"
    )
    assert presenters.event_summary("project.signed", {"title": "Deck", "role": "contractor"}) == (
        "Project “Deck” signed by the contractor"
    )
    assert presenters.event_summary(
        "payment.failed", {**data, "failure_code": "card_declined"}
    ) == ("Payment of 2,500.00 USD failed (card_declined)")
    assert presenters.event_summary(
        "payment.failed",
        {**data, "failure_code": "x", "failure_message": "Your card was declined."},
    ) == ("Payment of 2,500.00 USD failed: Your card was declined.")
    assert presenters.event_summary("something.new", {}) == "something: new"


def test_payment_steps_mark_skipped_states_from_the_timeline():
    class Event:
        def __init__(self, new_status):
            self.data = {"new_status": new_status}

    timeline = [Event("processing"), Event("authorized"), Event("completed")]
    states = {step.status: step.state for step in presenters.payment_steps("completed", timeline)}
    assert states == {
        "initiated": "done",
        "processing": "done",
        "verifying": "skipped",
        "authorized": "done",
        "completed": "current",
    }


def test_request_inspection_then_approve_from_inspection(project, milestone):
    fund(milestone)
    from escrow import services

    services.milestone_submit(milestone_id=milestone.pk, actor=project.contractor)
    client = browser_for(project.homeowner)
    csrf_post(client, f"/milestones/{milestone.pk}/request-inspection")
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.INSPECTION
    html = client.get(f"/projects/{project.pk}/").content.decode()
    assert "Inspection requested" in html
    assert f'action="/milestones/{milestone.pk}/approve"' in html
    csrf_post(client, f"/milestones/{milestone.pk}/approve", {"confirm": "yes"})
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.RELEASED


def test_cancel_a_pending_milestone_after_confirmation(project, milestone):
    client = browser_for(project.homeowner)
    csrf_post(client, f"/milestones/{milestone.pk}/cancel")
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.PENDING
    csrf_post(client, f"/milestones/{milestone.pk}/cancel", {"confirm": "yes"})
    milestone.refresh_from_db()
    assert milestone.status == Milestone.Status.CANCELLED


def test_a_failed_payment_is_told_to_each_party_in_their_own_words():
    """Issue 16: the contractor is told the homeowner's payment did not go through and that
    nothing is needed from them, never the card's decline reason; the homeowner reads the
    reason in words; an operator (or no viewer) gets the full account with the code."""
    from types import SimpleNamespace

    data = {
        "amount": 175050,
        "currency": "usd",
        "payer_id": 1,
        "payee_id": 2,
        "failure_code": "insufficient_funds",
        "failure_message": "Your card has insufficient funds.",
    }
    homeowner = SimpleNamespace(pk=1, is_staff=False)
    contractor = SimpleNamespace(pk=2, is_staff=False)
    operator = SimpleNamespace(pk=3, is_staff=True)

    told_contractor = presenters.event_summary("payment.failed", data, contractor)
    told_homeowner = presenters.event_summary("payment.failed", data, homeowner)
    told_operator = presenters.event_summary("payment.failed", data, operator)

    assert told_contractor == (
        "The homeowner's payment of 1,750.50 USD did not go through; nothing is needed from you"
    )
    assert "insufficient" not in told_contractor
    assert told_homeowner == "Payment of 1,750.50 USD failed: Your card has insufficient funds."
    assert presenters.event_summary(
        "payment.failed", {**data, "failure_message": ""}, homeowner
    ) == ("Payment of 1,750.50 USD failed: the card was not charged.")
    assert told_operator == "Payment of 1,750.50 USD failed: Your card has insufficient funds."


def test_payment_steps_read_in_words_for_the_parties():
    from types import SimpleNamespace

    data = {"amount": 500, "currency": "usd", "payer_id": 1, "payee_id": 2}
    data |= {"previous_status": "initiated", "new_status": "processing"}
    party = SimpleNamespace(pk=2, is_staff=False)

    assert presenters.event_summary("payment.status_updated", data, party) == (
        "Payment of 5.00 USD: processing"
    )
    assert presenters.event_summary("payment.status_updated", data) == (
        "Payment of 5.00 USD: initiated → processing"
    )


def test_the_homeowners_dashboard_offers_no_payable_column_and_says_who_is_signed_in(
    project, milestone
):
    """Issue 16: a homeowner is never paid out, so "Payable to you" / "Paid out" are the
    contractor's columns only; "Signed in as homeowner (homeowner)" read as a stutter."""
    fund(milestone)
    events_sequence_and_publish()

    homeowners = browser_for(project.homeowner).get("/").content.decode()
    contractors = browser_for(project.contractor).get("/").content.decode()

    assert "Payable to you" not in homeowners and "balance-usd-payable" not in homeowners
    assert "Earnings (not yet paid out)" in contractors and "balance-usd-paid_out" in contractors
    assert f"Signed in as <strong>{project.homeowner.username}</strong>" in homeowners
    assert "(homeowner)" not in homeowners
