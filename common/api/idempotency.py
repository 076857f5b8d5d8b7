"""`Idempotency-Key` for every POST under /api/, in one place.

The same key and body from the same caller within IDEMPOTENCY_TTL returns the stored first
response (header `Idempotent-Replayed: true`) and runs nothing again; the same key with another
body or path is 409 `idempotency_key_reused`; a second request while the first still runs is
409 `idempotency_request_in_progress` (the unique (user, key) insert decides which one runs).
Server errors and rate limits are not stored, so the caller may retry them with the same key.
"""

import hashlib
import json
import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpResponse
from django.utils import timezone

from common.api.exceptions import json_error
from common.models import IdempotencyRecord

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
_NOT_STORED = {401, 429}


def _request_hash(request) -> str:
    body = request.body
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":"))
        body = canonical.encode()
    except (ValueError, UnicodeDecodeError):
        pass
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), body):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()


def _caller(request):
    from accounts.authentication import user_for_authorization_header

    header = request.headers.get("Authorization", "")
    if header:
        return user_for_authorization_header(request, header)
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def _replay(record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(
        bytes(record.response_body or b""),
        status=record.response_status,
        content_type=record.response_content_type or "application/json",
    )
    response["Idempotent-Replayed"] = "true"
    return response


class IdempotencyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        key = request.headers.get(HEADER)
        if request.method != "POST" or key is None or not request.path.startswith("/api/"):
            return self.get_response(request)
        if not key.strip() or len(key) > MAX_KEY_LENGTH:
            return json_error(
                400,
                "validation_error",
                f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters.",
                field=HEADER,
            )
        if len(request.body) > settings.API_MAX_BODY_BYTES:
            return self.get_response(request)  # the parser answers 413 for it
        user = _caller(request)
        if user is None:
            return self.get_response(request)  # unauthenticated: the view answers 401

        request_hash = _request_hash(request)
        record = self._claim(user=user, key=key, request=request, request_hash=request_hash)
        if isinstance(record, HttpResponse):
            return record

        response = self.get_response(request)
        if (
            response.status_code >= 500
            or response.status_code in _NOT_STORED
            or getattr(response, "streaming", False)
        ):
            IdempotencyRecord.objects.filter(pk=record.pk).delete()
            return response
        if hasattr(response, "render") and not response.is_rendered:
            response.render()
        IdempotencyRecord.objects.filter(pk=record.pk).update(
            state=IdempotencyRecord.State.COMPLETED,
            response_status=response.status_code,
            response_body=response.content,
            response_content_type=response.get("Content-Type", "application/json"),
            completed_at=timezone.now(),
        )
        return response

    def _claim(self, *, user, key, request, request_hash, attempt: int = 0):
        try:
            with transaction.atomic():
                return IdempotencyRecord.objects.create(
                    user=user,
                    key=key,
                    method=request.method,
                    path=request.path[:500],
                    request_hash=request_hash,
                )
        except IntegrityError:
            pass
        existing = IdempotencyRecord.objects.filter(user=user, key=key).first()
        expired_before = timezone.now() - settings.IDEMPOTENCY_TTL
        if existing is not None and existing.created_at < expired_before and attempt == 0:
            # The key's 24 hours are over: it may be used afresh.
            IdempotencyRecord.objects.filter(
                pk=existing.pk, created_at=existing.created_at
            ).delete()
            return self._claim(
                user=user, key=key, request=request, request_hash=request_hash, attempt=1
            )
        if existing is None or existing.state == IdempotencyRecord.State.IN_PROGRESS:
            return json_error(
                409,
                "idempotency_request_in_progress",
                "A request with this Idempotency-Key is still being processed.",
                field=HEADER,
            )
        if existing.request_hash != request_hash:
            return json_error(
                409,
                "idempotency_key_reused",
                "This Idempotency-Key was used with a different request.",
                field=HEADER,
            )
        return _replay(existing)


def prune_expired(*, batch_size: int = 5000) -> int:
    cutoff = timezone.now() - settings.IDEMPOTENCY_TTL
    ids = list(
        IdempotencyRecord.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[
            :batch_size
        ]
    )
    return IdempotencyRecord.objects.filter(pk__in=ids).delete()[0]
