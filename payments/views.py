"""Incoming gateway webhooks through Django (the test client, `runserver`, any server that does
not use config.asgi). Served by Daphne, config.asgi sends these two paths to
payments.ingest.asgi_app instead, which gives the same answers without Django's request cycle;
both call payments.ingest.answer(). No session, no CSRF (the signature is the authentication),
no DRF."""

from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from payments import ingest


def _respond(status_and_payload: tuple[int, bytes]) -> HttpResponse:
    status, payload = status_and_payload
    response = HttpResponse(payload, status=status, content_type="application/json")
    if status == 405:
        response["Allow"] = "POST"
    return response


def _receive(request, provider: str):
    if request.method != "POST":
        return _respond(ingest.NOT_ALLOWED)
    if ingest.too_large(request.META.get("CONTENT_LENGTH")):
        return _respond(ingest.TOO_LARGE)
    try:
        body = request.body
    except RequestDataTooBig:
        return _respond(ingest.TOO_LARGE)
    return _respond(
        ingest.answer(
            provider=provider, body=body, signature=request.headers.get("Stripe-Signature")
        )
    )


@csrf_exempt
def stripe_webhook(request):
    return _receive(request, "stripe")


@csrf_exempt
def sandbox_webhook(request):
    return _receive(request, "sandbox")
