"""Incoming gateway webhooks. Lean on purpose (the benchmark measures this path): read the
body, verify, one INSERT, one enqueue, answer. No session, no CSRF (the signature is the
authentication), no DRF."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from common.api.exceptions import json_error
from payments.exceptions import WebhookRejected
from payments.services.webhooks import webhook_receive

_OK = b'{"received":true}'
_DUPLICATE = b'{"received":true,"duplicate":true}'


def _receive(request, provider: str):
    if request.method != "POST":
        return JsonResponse(
            {"error": {"code": "method_not_allowed", "message": "POST only."}}, status=405
        )
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > settings.PAYMENTS_WEBHOOK_MAX_BYTES:
        return json_error(400, "webhook_rejected", "The body is too large.")
    try:
        body = request.body
    except RequestDataTooBig:
        return json_error(400, "webhook_rejected", "The body is too large.")
    try:
        _, created = webhook_receive(
            provider=provider, body=body, signature_header=request.headers.get("Stripe-Signature")
        )
    except WebhookRejected as exc:
        return json_error(400, exc.code, exc.message)
    return HttpResponse(_OK if created else _DUPLICATE, content_type="application/json")


@csrf_exempt
def stripe_webhook(request):
    return _receive(request, "stripe")


@csrf_exempt
def sandbox_webhook(request):
    return _receive(request, "sandbox")
