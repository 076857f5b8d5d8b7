"""The sandbox's 3-D Secure challenge page: the stand-in for the page a card issuer shows
(Stripe's redirect_to_url), so the whole flow is visible without Stripe.

GET /sandbox/3ds/<intent id>/?client_secret=...&return_url=... shows the payment and two
buttons; POST (form fields or JSON `{client_secret, result: "pass" | "fail"}`) passes or fails
the check through SandboxGateway.authenticate, whose webhook then moves our payment, exactly
as Stripe's would. The client secret is the authorization, as at Stripe (only the payer is
given it): no session is used, so there is no CSRF to guard against. A wrong or missing secret
is a 404 and changes nothing. The return URL must be on this site (no open redirect)."""

import json
import secrets

from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from escrow.money import format_amount
from payments.gateways.base import InvalidRequest
from payments.gateways.sandbox.gateway import SandboxGateway

RESULTS = {"pass": True, "fail": False}


def _intent_or_404(intent_id: str, client_secret: str) -> dict:
    from payments.models import SandboxObject

    obj = SandboxObject.objects.filter(object_id=intent_id, kind="payment_intent").first()
    expected = (obj.data.get("client_secret") or "") if obj else ""
    if not expected or not secrets.compare_digest(expected, client_secret):
        raise Http404("No such payment intent.")
    return obj.data


def _safe_return_url(request, url: str) -> str:
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return ""


def _page(request, intent, *, client_secret, return_url, error="", status=200):
    context = {
        "intent": intent,
        "client_secret": client_secret,
        "return_url": return_url,
        "amount": format_amount(intent["amount"], intent["currency"]),
        "error": error,
    }
    return render(request, "sandbox/challenge.html", context, status=status)


def _invalid(message: str, field: str = "") -> JsonResponse:
    error = {"code": "validation_error", "message": message}
    if field:
        error["field"] = field
    return JsonResponse({"error": error}, status=400)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def challenge(request, intent_id: str):
    wants_json = request.content_type == "application/json"
    if wants_json:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _invalid("The body must be a JSON object.")
    else:
        body = request.POST if request.method == "POST" else request.GET
    client_secret = str(body.get("client_secret") or "")
    return_url = _safe_return_url(request, str(body.get("return_url") or ""))
    intent = _intent_or_404(intent_id, client_secret)
    page = {"client_secret": client_secret, "return_url": return_url}
    if request.method == "GET":
        return _page(request, intent, **page)
    result = str(body.get("result") or "")
    if result not in RESULTS:
        message = 'result must be "pass" or "fail".'
        if wants_json:
            return _invalid(message, "result")
        return _page(request, intent, **page, error=message, status=400)
    try:
        answer = SandboxGateway().authenticate(
            payment_id=intent_id, client_secret=client_secret, success=RESULTS[result]
        )
    except InvalidRequest as error:
        raise Http404("No such payment intent.") from error
    if wants_json:
        return JsonResponse({"id": answer.id, "status": answer.status})
    if return_url:
        return redirect(return_url)
    return _page(request, {**intent, "status": answer.status}, **page)
