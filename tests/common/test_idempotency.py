"""Idempotency-Key on POST: replay, mismatch, expiry, and one winner under concurrency.

The endpoint under test is a tiny POST view mounted only for these tests, which counts how
often its body actually ran."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.urls import include, path
from django.utils import timezone
from rest_framework.response import Response
from rest_framework.views import APIView

from common.models import IdempotencyRecord
from tests.conftest import requires_postgres

RUNS: list[dict] = []
GATE = threading.Event()


class CountingView(APIView):
    def post(self, request):
        if request.data.get("wait"):
            GATE.wait(timeout=10)
        RUNS.append(dict(request.data))
        if request.data.get("fail"):
            return Response({"error": {"code": "boom", "message": "x", "field": None}}, 503)
        return Response({"run": len(RUNS), "echo": request.data}, status=201)


urlpatterns = [
    path("api/v1/test-counter", CountingView.as_view()),
    path("", include("config.urls")),
]

pytestmark = [pytest.mark.urls(__name__)]


@pytest.fixture(autouse=True)
def _reset():
    RUNS.clear()
    GATE.clear()


@pytest.mark.django_db
def test_same_key_and_body_returns_the_first_response_without_running_again(homeowner):
    first = homeowner.post("/api/v1/test-counter", {"a": 1}, HTTP_IDEMPOTENCY_KEY="k1")
    second = homeowner.post("/api/v1/test-counter", {"a": 1}, HTTP_IDEMPOTENCY_KEY="k1")

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert len(RUNS) == 1


@pytest.mark.django_db
def test_key_order_in_the_json_body_does_not_matter(homeowner):
    homeowner.post(
        "/api/v1/test-counter",
        '{"a": 1, "b": 2}',
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="k1",
    )
    again = homeowner.post(
        "/api/v1/test-counter",
        '{"b": 2, "a": 1}',
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="k1",
    )

    assert again.status_code == 201 and len(RUNS) == 1


@pytest.mark.django_db
def test_same_key_with_another_body_is_409_and_runs_nothing(homeowner):
    homeowner.post("/api/v1/test-counter", {"a": 1}, HTTP_IDEMPOTENCY_KEY="k1")

    response = homeowner.post("/api/v1/test-counter", {"a": 2}, HTTP_IDEMPOTENCY_KEY="k1")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert len(RUNS) == 1


@pytest.mark.django_db
def test_keys_are_scoped_per_caller(homeowner, contractor):
    homeowner.post("/api/v1/test-counter", {"a": 1}, HTTP_IDEMPOTENCY_KEY="shared")

    response = contractor.post("/api/v1/test-counter", {"a": 2}, HTTP_IDEMPOTENCY_KEY="shared")

    assert response.status_code == 201 and len(RUNS) == 2


@pytest.mark.django_db
def test_without_a_key_every_post_runs(homeowner):
    homeowner.post("/api/v1/test-counter", {"a": 1})
    homeowner.post("/api/v1/test-counter", {"a": 1})

    assert len(RUNS) == 2 and not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_server_errors_are_not_stored_so_a_retry_runs(homeowner):
    homeowner.post("/api/v1/test-counter", {"fail": True}, HTTP_IDEMPOTENCY_KEY="k1")

    homeowner.post("/api/v1/test-counter", {"fail": True}, HTTP_IDEMPOTENCY_KEY="k1")

    assert len(RUNS) == 2


@pytest.mark.django_db
def test_an_expired_key_runs_again(homeowner):
    homeowner.post("/api/v1/test-counter", {"a": 1}, HTTP_IDEMPOTENCY_KEY="k1")
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))

    response = homeowner.post("/api/v1/test-counter", {"a": 2}, HTTP_IDEMPOTENCY_KEY="k1")

    assert response.status_code == 201 and len(RUNS) == 2


@pytest.mark.django_db
def test_an_oversized_key_is_400(homeowner):
    response = homeowner.post("/api/v1/test-counter", {"a": 1}, HTTP_IDEMPOTENCY_KEY="k" * 300)

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "Idempotency-Key"
    assert RUNS == []


@pytest.mark.django_db
def test_prune_removes_only_expired_records(homeowner):
    from common.api.idempotency import prune_expired

    homeowner.post("/api/v1/test-counter", {"a": 1}, HTTP_IDEMPOTENCY_KEY="old")
    homeowner.post("/api/v1/test-counter", {"a": 1}, HTTP_IDEMPOTENCY_KEY="new")
    IdempotencyRecord.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(days=2)
    )

    assert prune_expired() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(ALLOWED_HOSTS=["testserver"])
def test_two_concurrent_requests_with_one_key_run_once_and_the_other_gets_409(homeowner):
    """Real threads on PostgreSQL: the first request holds the key while it runs; the second
    arrives meanwhile and must be refused rather than run the body a second time."""
    results = {}

    def send(name, body):
        from rest_framework.test import APIClient

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {homeowner.key}")
        try:
            results[name] = client.post("/api/v1/test-counter", body, HTTP_IDEMPOTENCY_KEY="race")
        finally:
            connection.close()

    first = threading.Thread(target=send, args=("first", {"wait": True}))
    first.start()
    for _ in range(100):
        if IdempotencyRecord.objects.filter(key="race").exists():
            break
        threading.Event().wait(0.05)
    second = threading.Thread(target=send, args=("second", {"wait": True}))
    second.start()
    second.join(timeout=10)
    GATE.set()
    first.join(timeout=10)

    assert results["first"].status_code == 201
    assert results["second"].status_code == 409
    assert results["second"].json()["error"]["code"] == "idempotency_request_in_progress"
    assert len(RUNS) == 1


@pytest.mark.django_db
def test_malformed_json_is_400_with_the_error_body(homeowner):
    response = homeowner.post(
        "/api/v1/test-counter",
        "{not json",
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="k1",
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    assert RUNS == []
