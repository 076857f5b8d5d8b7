"""Portal pages: thin doors that read through permission-checked selectors, call the same
services as the API, and show the domain errors as messages. Every page works without
JavaScript; the live client (static/js/live.js) swaps in the `*_fragment` views' HTML."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from common.errors import DomainError, NotFound
from escrow import selectors as escrow_selectors
from escrow import services as escrow_services
from portal import forms, pages, payments_bridge, presenters

_SERVICES = {
    "submit": escrow_services.milestone_submit,
    "request-inspection": escrow_services.milestone_request_inspection,
    "approve": escrow_services.milestone_approve,
    "refund": escrow_services.milestone_refund,
    "cancel": escrow_services.milestone_cancel,
}
_NEEDS_CONFIRMATION = presenters.MONEY_ACTIONS | {"cancel"}


# --- Dashboard --------------------------------------------------------------------------------


@login_required
@require_GET
def dashboard(request):
    return render(request, "portal/dashboard.html", pages.dashboard_context(user=request.user))


@never_cache
@login_required
@require_GET
def dashboard_fragment(request):
    return render(
        request, "portal/_dashboard_live.html", pages.dashboard_context(user=request.user)
    )


# --- Projects and milestones ------------------------------------------------------------------


def _project_context(request, project_id: int) -> dict:
    try:
        return pages.project_context(user=request.user, project_id=project_id)
    except NotFound as error:
        raise Http404("No such project.") from error


@login_required
@require_GET
def project_detail(request, project_id: int):
    context = _project_context(request, project_id)
    context["fund_form"] = forms.FundForm(methods=context["payment_methods"])
    return render(request, "portal/project_detail.html", context)


@never_cache
@login_required
@require_GET
def project_fragment(request, project_id: int):
    context = _project_context(request, project_id)
    context["fund_form"] = forms.FundForm(methods=context["payment_methods"])
    return render(request, "portal/_project_live.html", context)


@login_required
@require_POST
def project_sign(request, project_id: int):
    try:
        escrow_selectors.project_get_for_user(user=request.user, project_id=project_id)
    except NotFound as error:
        raise Http404("No such project.") from error
    try:
        project = escrow_services.project_sign(project_id=project_id, actor=request.user)
    except DomainError as error:
        messages.error(request, f"Could not sign: {error.message}")
    else:
        status = presenters.STATUS_LABELS.get(project.status, project.status)
        messages.success(request, f"You signed the contract. Project status: {status}.")
    return redirect("portal:project", project_id=project_id)


def _milestone_or_404(request, milestone_id: int):
    try:
        return escrow_selectors.milestone_get_for_user(user=request.user, milestone_id=milestone_id)
    except NotFound as error:
        raise Http404("No such milestone.") from error


@login_required
@require_http_methods(["GET", "POST"])
def milestone_action(request, milestone_id: int, action: str):
    """GET: the confirmation page. POST: carry the action out (money moves and cancellation
    need `confirm=yes`, which the second step of the project page's form sends)."""
    if action not in presenters.ACTION_NAMES:
        raise Http404("No such action.")
    milestone = _milestone_or_404(request, milestone_id)
    project = milestone.project
    methods = payments_bridge.usable_payment_methods(user=request.user) if action == "fund" else []
    form = forms.FundForm(request.POST or None, methods=methods) if action == "fund" else None
    confirmed = request.method == "POST" and request.POST.get("confirm") == "yes"
    if request.method == "GET" or (action in _NEEDS_CONFIRMATION and not confirmed):
        return _confirm_page(request, milestone, action, form)
    if form is not None and not form.is_valid():
        messages.error(request, "Choose a saved payment method to fund this milestone.")
        return _confirm_page(request, milestone, action, form, status=400)
    try:
        if action == "fund":
            payment = payments_bridge.milestone_fund(
                user=request.user,
                milestone_id=milestone.pk,
                payment_method_id=form.cleaned_data["payment_method"],
            )
            payment.refresh_from_db(fields=["status"])
            if payment.status == "verifying":
                messages.warning(
                    request,
                    f"Your bank asks you to confirm the payment for “{milestone.title}” "
                    f"(payment #{payment.pk}) with 3-D Secure: choose “Complete 3-D Secure” "
                    "below. Until then the milestone is not funded.",
                )
            else:
                messages.success(
                    request,
                    f"Payment started for “{milestone.title}” (payment #{payment.pk}); "
                    "its progress shows below as the card is processed.",
                )
        else:
            milestone = _SERVICES[action](milestone_id=milestone.pk, actor=request.user)
            label = presenters.STATUS_LABELS.get(milestone.status, milestone.status)
            messages.success(request, f"“{milestone.title}” is now: {label}.")
    except DomainError as error:
        messages.error(request, f"Could not {action.replace('-', ' ')}: {error.message}")
    url = reverse("portal:project", kwargs={"project_id": project.pk})
    return redirect(f"{url}#milestone-{milestone.pk}")


def _confirm_page(request, milestone, action, form, status=200):
    project = milestone.project
    offered = {
        a.name: a
        for a in presenters.milestone_actions(
            milestone=milestone, project=project, user=request.user
        )
    }
    return render(
        request,
        "portal/confirm.html",
        {
            "milestone": milestone,
            "project": project,
            "action": offered.get(action)
            or presenters.Action(action, action.replace("-", " ").capitalize()),
            "is_offered": action in offered,
            "fund_form": form,
        },
        status=status,
    )


# --- Payments ---------------------------------------------------------------------------------


def _payment_context(request, payment_id: int) -> dict:
    try:
        payment = payments_bridge.payment_get_for_user(user=request.user, payment_id=payment_id)
    except NotFound as error:
        raise Http404("No such payment.") from error
    timeline = payments_bridge.payment_timeline(user=request.user, payment_id=payment.pk)
    return_url = reverse("portal:payment", kwargs={"payment_id": payment.pk})
    return {
        "payment": payment,
        "challenge": payments_bridge.payment_challenge(
            user=request.user, payment=payment, return_url=return_url
        ),
        "stripe_publishable_key": payments_bridge.stripe_publishable_key(),
        "steps": presenters.payment_steps(payment.status, timeline),
        "timeline": timeline,
        "channels": [f"payment.{payment.pk}", *pages.user_channels(request.user)],
        "last_event_id": pages.portal_selectors.last_event_id_for_user(user=request.user),
    }


@login_required
@require_GET
def payment_detail(request, payment_id: int):
    return render(request, "portal/payment_detail.html", _payment_context(request, payment_id))


@never_cache
@login_required
@require_GET
def payment_fragment(request, payment_id: int):
    return render(request, "portal/_payment_live.html", _payment_context(request, payment_id))


def _methods_context(request, form) -> dict:
    return {
        "methods": payments_bridge.payment_methods_for_user(user=request.user),
        "form": form,
        "stripe_publishable_key": payments_bridge.stripe_publishable_key(),
        "channels": [f"user.{request.user.pk}.payment_methods"],
        "last_event_id": pages.portal_selectors.last_event_id_for_user(user=request.user),
    }


@login_required
@require_http_methods(["GET", "POST"])
def payment_methods(request):
    stripe = bool(payments_bridge.stripe_publishable_key())
    form = forms.payment_method_form(request.POST or None, stripe=stripe)
    if request.method == "POST":
        if form.is_valid():
            try:
                method = payments_bridge.payment_method_add(
                    user=request.user, token=form.cleaned_data["token"]
                )
            except DomainError as error:
                messages.error(request, f"Could not add the card: {error.message}")
            else:
                messages.success(request, f"Added {method}.")
                return redirect("portal:payment_methods")
        status = 400
    else:
        status = 200
    return render(
        request, "portal/payment_methods.html", _methods_context(request, form), status=status
    )


@never_cache
@login_required
@require_GET
def payment_methods_fragment(request):
    return render(
        request,
        "portal/_payment_methods_live.html",
        _methods_context(request, forms.PaymentMethodAddForm()),
    )


@login_required
@require_POST
def payment_method_change(request, method_id: int, change: str):
    try:
        if change == "default":
            method = payments_bridge.payment_method_set_default(
                user=request.user, payment_method_id=method_id
            )
            messages.success(request, f"{method} is now your default payment method.")
        elif change == "remove":
            method = payments_bridge.payment_method_remove(
                user=request.user, payment_method_id=method_id
            )
            messages.success(request, f"Removed {method}.")
        else:
            raise Http404("No such change.")
    except NotFound as error:
        raise Http404("No such payment method.") from error
    except DomainError as error:
        messages.error(request, error.message)
    return redirect("portal:payment_methods")


# --- Notifications ----------------------------------------------------------------------------


def _notifications_context(request) -> dict:
    from realtime import selectors as realtime_selectors

    return {
        "notifications": list(
            realtime_selectors.notification_list_for_user(user=request.user)[:100]
        ),
        "unread": realtime_selectors.notification_unread_count(user=request.user),
        "channels": pages.user_channels(request.user),
        "last_event_id": pages.portal_selectors.last_event_id_for_user(user=request.user),
    }


def _preference_form(request, data=None):
    from realtime import selectors as realtime_selectors
    from realtime.models import Notification

    preference = realtime_selectors.notification_preference_for_user(user=request.user)
    kinds = Notification.Kind.choices
    initial = {
        "email_enabled": preference.email_enabled,
        "email_kinds": [kind for kind, _ in kinds if kind not in preference.email_muted_kinds],
    }
    return forms.NotificationPreferenceForm(data, initial=initial, kinds=kinds)


@login_required
@require_GET
def notifications(request):
    context = _notifications_context(request)
    context["preference_form"] = _preference_form(request)
    return render(request, "portal/notifications.html", context)


@login_required
@require_POST
def notification_preferences(request):
    from realtime.services.notifications import notification_preference_update

    form = _preference_form(request, request.POST)
    if form.is_valid():
        wanted = set(form.cleaned_data["email_kinds"])
        notification_preference_update(
            user=request.user,
            email_enabled=form.cleaned_data["email_enabled"],
            email_muted_kinds=[
                kind for kind, _ in form.fields["email_kinds"].choices if kind not in wanted
            ],
        )
        messages.success(request, "Your e-mail preferences are saved.")
    else:
        messages.error(request, "Those preferences could not be saved.")
    return redirect("portal:notifications")


@never_cache
@login_required
@require_GET
def notifications_fragment(request):
    return render(request, "portal/_notifications_live.html", _notifications_context(request))


@never_cache
@login_required
@require_GET
def notifications_unread(request):
    from realtime import selectors as realtime_selectors

    return JsonResponse({"unread": realtime_selectors.notification_unread_count(user=request.user)})


@login_required
@require_POST
def notification_read(request, notification_id: int):
    from realtime.services.notifications import notification_mark_read

    try:
        notification_mark_read(notification_id=notification_id, user=request.user)
    except NotFound as error:
        raise Http404("No such notification.") from error
    return redirect("portal:notifications")


@login_required
@require_POST
def notifications_read_all(request):
    from realtime.services.notifications import notification_mark_all_read

    count = notification_mark_all_read(user=request.user)
    messages.success(request, f"Marked {count} notification{'s' if count != 1 else ''} read.")
    return redirect("portal:notifications")
