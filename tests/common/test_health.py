"""/healthz answers for the database, the cache and the broker."""

import pytest

pytestmark = pytest.mark.django_db


def test_healthz_reports_each_dependency(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok",
        "cache": "ok",
        "broker": "ok",
    }


def test_healthz_is_503_when_the_cache_is_unreachable(client, settings, monkeypatch):
    from common import health

    def broken():
        raise ConnectionError("down")

    monkeypatch.setattr(health, "_cache", broken)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["checks"]["cache"] == {
        "status": "error",
        "ms": response.json()["checks"]["cache"]["ms"],
        "detail": "ConnectionError",
    }
