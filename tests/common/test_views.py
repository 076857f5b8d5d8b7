"""The site's own error pages: 400, 403, 404 and 500 render in the site's layout (no Django
debug page, no stack trace) with the request's id, the same id is on the response header and
on the log record of the failure; API paths keep their JSON error body, with the id. A form
from a page opened before a logout ends on the site's "page was out of date" page (403), not
Django's raw CSRF page, and nothing is carried out."""

import logging
import re

import pytest
from django.test import Client

from tests.escrow.factories import DraftProjectFactory
from tests.factories import HomeownerFactory

pytestmark = pytest.mark.django_db

ID = re.compile(r"<code data-request-id>([^<]+)</code>")


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    settings.ROOT_URLCONF = "tests.common.error_urls"


def page_request_id(response) -> str:
    found = ID.search(response.content.decode())
    assert found, "no request id on the page"
    return found.group(1)


def records_with(caplog, request_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "request_id", None) == request_id]


@pytest.mark.parametrize(
    ("path", "status", "heading"),
    [
        ("/test-errors/400/", 400, "We could not understand that request"),
        ("/test-errors/403/", 403, "You are not allowed to do that"),
        ("/nowhere/", 404, "Page not found"),
        ("/test-errors/500/", 500, "Something went wrong on our side"),
    ],
)
def test_each_error_renders_the_sites_page_with_the_request_id_that_is_logged(
    production, caplog, path, status, heading
):
    """Given production mode; when a page fails with `status`; then the site's page (its
    layout, a heading in words, no traceback) shows the request id, the response carries it
    in X-Request-ID, and a log record of the failure has the same id."""
    client = Client(raise_request_exception=False)

    with caplog.at_level(logging.INFO):
        response = client.get(path)

    body = response.content.decode()
    request_id = page_request_id(response)
    assert response.status_code == status
    assert heading in body
    assert 'class="site-header"' in body  # the site's layout
    assert "Traceback" not in body and "failing on purpose" not in body
    assert response["X-Request-ID"] == request_id
    assert records_with(caplog, request_id), [vars(r) for r in caplog.records]


def test_a_500_on_an_api_path_is_the_json_error_body_with_the_request_id(production, caplog):
    """Given production mode; when an API view fails unexpectedly; then the answer is the
    contract's JSON error body (no page) with the request id, which the error log has too."""
    client = Client(raise_request_exception=False)

    with caplog.at_level(logging.INFO):
        response = client.get("/api/v1/test-errors/500")

    error = response.json()["error"]
    assert response.status_code == 500
    assert error["code"] == "server_error"
    assert error["request_id"] == response["X-Request-ID"]
    logged = records_with(caplog, error["request_id"])
    assert any(record.levelno == logging.ERROR for record in logged)


def test_a_sane_incoming_request_id_is_kept_and_a_forged_one_replaced(production):
    """A proxy's X-Request-ID is kept; one that could forge a log line is not."""
    client = Client()

    kept = client.get("/healthz", HTTP_X_REQUEST_ID="proxy-1234abcd")
    replaced = client.get("/healthz", HTTP_X_REQUEST_ID='x"\n{"level": "fake"}')

    assert kept["X-Request-ID"] == "proxy-1234abcd"
    assert re.fullmatch(r"[0-9a-f]{32}", replaced["X-Request-ID"])


def test_a_form_from_before_signing_in_again_gets_the_sites_page_and_is_not_carried_out(
    production,
):
    """Given a project page loaded (with its CSRF token), then a logout and a new sign-in in
    another tab (a new CSRF secret); when the old page's "sign the contract" form is sent;
    then the answer is the site's 403 page that explains it and offers to open the page
    again (not the action URL), and the contract is not signed."""
    project = DraftProjectFactory()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(project.homeowner)
    page = f"/projects/{project.pk}/"
    assert browser.get(page).status_code == 200
    stale_token = browser.cookies["csrftoken"].value
    browser.logout()  # the test client forgets every cookie here, as a new sign-in renews it
    browser.force_login(project.homeowner)
    browser.get("/")  # the other tab: a fresh CSRF cookie
    assert browser.cookies["csrftoken"].value != stale_token

    response = browser.post(
        f"/projects/{project.pk}/sign",
        {"csrfmiddlewaretoken": stale_token},
        HTTP_REFERER=f"http://testserver{page}?tab=milestones",
    )

    body = response.content.decode()
    assert response.status_code == 403
    assert "This page was open from an earlier sign-in" in body
    assert "not carried out" in body
    assert f'href="{page}?tab=milestones"' in body
    assert f"/projects/{project.pk}/sign" not in body
    assert "CSRF verification failed" not in body
    assert 'class="site-header"' in body
    assert page_request_id(response) == response["X-Request-ID"]
    project.refresh_from_db()
    assert project.homeowner_signed_at is None


def test_a_form_from_before_a_logout_offers_to_sign_in_again_and_come_back(production):
    """Given a page loaded, then a logout; when its form is sent; then the 403 page links to
    the login with `next` set to the page the form was on."""
    project = DraftProjectFactory()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(project.homeowner)
    browser.get(f"/projects/{project.pk}/")
    stale_token = browser.cookies["csrftoken"].value
    browser.logout()

    response = browser.post(
        f"/projects/{project.pk}/sign",
        {"csrfmiddlewaretoken": stale_token},
        HTTP_REFERER=f"http://testserver/projects/{project.pk}/",
    )

    body = response.content.decode()
    assert response.status_code == 403
    assert f'href="/accounts/login/?next=/projects/{project.pk}/"' in body
    project.refresh_from_db()
    assert project.homeowner_signed_at is None


def test_a_stale_form_without_a_referer_offers_the_dashboard(production):
    """Without a Referer of this site the way back is the dashboard, never the action URL."""
    browser = Client(enforce_csrf_checks=True)

    response = browser.post("/accounts/password/", {}, HTTP_REFERER="https://evil.example/phish")

    body = response.content.decode()
    assert response.status_code == 403
    assert 'href="/accounts/login/?next=/"' in body
    assert "next=/accounts/password/" not in body


def test_an_api_request_failing_the_csrf_check_gets_the_json_error(production):
    """API paths keep the JSON error body, with the request's id, when Django's CSRF check
    refuses one (every endpoint and the unknown-path 404 are CSRF-exempt today, so the view
    is called as Django calls it); an unknown API path itself is the JSON 404."""
    from django.test import RequestFactory

    from common import request_id
    from common.views import csrf_failure

    request = RequestFactory().post("/api/v1/projects")
    request.request_id = "req-csrf-12345"

    error = csrf_failure(request, reason="CSRF cookie not set.")

    body = error.content.decode()
    assert error.status_code == 403 and error["Content-Type"] == "application/json"
    assert '"csrf_failed"' in body and request_id.of(request) in body

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(HomeownerFactory())
    response = browser.post("/api/v1/no-such-thing", {})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_api_errors_carry_the_request_id(production, homeowner):
    """Every API error body (here a 404 for a project the caller may not see) names the
    request id from the response header."""
    response = homeowner.get("/api/v1/projects/999999", HTTP_X_REQUEST_ID="client-abcdef12")

    assert response.status_code == 404
    assert response.json()["error"]["request_id"] == "client-abcdef12"
    assert response["X-Request-ID"] == "client-abcdef12"


def test_an_api_body_over_the_limit_is_the_json_413_and_changes_nothing(homeowner, contractor):
    """A body larger than API_MAX_BODY_BYTES is refused by Django before any view runs; under
    /api/ it answered Django's HTML 400 page. Now the API's JSON error body, 413, with or
    without an Idempotency-Key, and no project is created."""
    from django.conf import settings

    from escrow.models import Project

    body = '{"title": "' + "x" * (settings.API_MAX_BODY_BYTES + 1) + '"}'
    for headers in ({}, {"HTTP_IDEMPOTENCY_KEY": "big-body"}):
        response = homeowner.client.generic(
            "POST", "/api/v1/projects", body, content_type="application/json", **headers
        )

        assert response.status_code == 413
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "payload_too_large"
    assert not Project.objects.exists()
