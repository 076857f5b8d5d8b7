"""Every API error has the contract's body: {"error": {"code", "message", "field"}}."""

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
