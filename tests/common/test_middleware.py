"""The Content-Security-Policy (common.middleware) on every response, the API docs page
included: that page and its start-up script are files, so it needs no 'unsafe-inline'."""

import re

import pytest

pytestmark = pytest.mark.django_db

STRICT = "script-src 'self';"


def test_the_api_docs_page_is_served_under_the_strict_policy_with_no_inline_code(client):
    """/api/v1/docs/ was served with no policy at all (drf-spectacular's page inlines its
    start-up script and a style). Now: the site's policy, no inline script or style, and the
    start-up script it names is served as JavaScript under the same policy."""
    response = client.get("/api/v1/docs/")

    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert STRICT in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    html = response.content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert "<style" not in html and " style=" not in html
    script = re.search(r'<script src="([^"]*script=[^"]*)"', html).group(1)
    start_up = client.get(script.replace("&amp;", "&"))
    assert start_up.status_code == 200
    assert start_up["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in start_up.content
    assert STRICT in start_up["Content-Security-Policy"]


@pytest.mark.parametrize(
    "path", ["/api/v1/schema/", "/api/v1/nothing-here", "/healthz", "/static/js/live.js"]
)
def test_every_response_carries_the_policy(client, path):
    """API answers, errors, health checks and static files (served by WhiteNoise, before the
    views) all carry it."""
    response = client.get(path)

    assert STRICT in response["Content-Security-Policy"], path
