"""`/healthz`: database, cache and broker reachability, 200 when all answer, 503 otherwise."""

import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def _timed(check):
    started = time.perf_counter()
    try:
        detail = check()
        status = "ok"
    except Exception as exc:
        detail, status = type(exc).__name__, "error"
    result = {"status": status, "ms": round((time.perf_counter() - started) * 1000, 1)}
    if detail:
        result["detail"] = detail
    return result


def _database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _cache():
    cache.set("healthz", "1", 5)
    if cache.get("healthz") != "1":
        raise RuntimeError("cache did not return the value")
    return settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]


def _broker():
    from config.celery import app

    if settings.CELERY_BROKER_URL.startswith("memory://"):
        return "eager" if settings.CELERY_TASK_ALWAYS_EAGER else "memory"
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return settings.CELERY_BROKER_URL.split("://", 1)[0]  # redis, filesystem (make run), ...


@never_cache
@require_GET
def healthz(request):
    checks = {"database": _timed(_database), "cache": _timed(_cache), "broker": _timed(_broker)}
    healthy = all(check["status"] == "ok" for check in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "error", "checks": checks}, status=200 if healthy else 503
    )
