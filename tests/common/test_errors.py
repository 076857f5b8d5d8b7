"""Every API error has the contract's body: {"error": {"code", "message", "field"}}."""

import json

import pytest

pytestmark = pytest.mark.django_db


def test_unknown_api_path_is_a_json_404(homeowner):
    response = homeowner.get("/api/v1/no-such-thing")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_wrong_method_is_405_with_the_error_body(homeowner):
    response = homeowner.post("/api/v1/me", {})

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_validation_errors_name_the_field(homeowner):
    response = homeowner.get("/api/v1/events?after=-5")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["field"] == "after"


def test_throttled_requests_get_429_with_the_error_body(homeowner, settings):
    from rest_framework.settings import api_settings
    from rest_framework.throttling import UserRateThrottle

    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "user": "2/min"}
    original = UserRateThrottle.THROTTLE_RATES
    UserRateThrottle.THROTTLE_RATES = rates
    try:
        statuses = [homeowner.get("/api/v1/me").status_code for _ in range(3)]
        response = homeowner.get("/api/v1/me")
    finally:
        UserRateThrottle.THROTTLE_RATES = original

    assert statuses[:2] == [200, 200] and statuses[2] == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert "Retry-After" in response


def test_schema_and_docs_are_served(client):
    schema = client.get("/api/v1/schema/")
    docs = client.get("/api/v1/docs/")

    assert schema.status_code == 200 and b"openapi: 3" in schema.content
    assert docs.status_code == 200


METHODS = ["get", "post", "put", "patch", "delete", "options"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "session"])
def test_unknown_api_path_is_a_json_404_for_every_method_and_caller(method, signed_in):
    """A POST (or PUT, PATCH, DELETE) to an unknown /api/v1/ path answered Django's HTML
    "403 CSRF cookie not set", from a browser with or without a session. Now the contract's
    JSON 404, whatever the method and whoever asks, with the CSRF check on as in production."""
    from django.test import Client

    from tests.factories import HomeownerFactory

    client = Client(enforce_csrf_checks=True)
    if signed_in:
        client.force_login(HomeownerFactory())

    body = {} if method == "get" else {"data": "{}", "content_type": "application/json"}
    response = getattr(client, method)("/api/v1/no-such-thing", **body)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"


def test_unknown_api_path_with_a_key_and_an_idempotency_key_is_a_json_404(homeowner):
    response = homeowner.post("/api/v1/no/such/thing", {}, HTTP_IDEMPOTENCY_KEY="k-404")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_csrf_failure_under_the_api_is_the_json_error_body(rf):
    """CSRF_FAILURE_VIEW answers API paths with the contract's body; pages get the site's own
    page (tests/common/test_views.py says what it tells)."""
    from common.views import csrf_failure

    api = csrf_failure(rf.post("/api/v1/anything"), reason="CSRF cookie not set.")
    page = csrf_failure(rf.post("/accounts/login/"), reason="CSRF cookie not set.")

    assert api.status_code == 403 and api["Content-Type"] == "application/json"
    assert json.loads(api.content)["error"]["code"] == "csrf_failed"
    assert page.status_code == 403 and page["Content-Type"].startswith("text/html")
