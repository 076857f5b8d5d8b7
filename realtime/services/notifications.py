"""In-app notifications and their e-mails, derived from events after commit."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from common.money import format_amount
from realtime.exceptions import NotificationNotFound
from realtime.models import Event, Notification, NotificationPreference

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Rule:
    kind: str
    # Who must act: "payer" (the homeowner side), "payee" (the contractor side), "parties"
    # (everyone in the audience) or "operators" (the operators in the audience).
    recipients: str
    title: str


def _rule_for(event: Event) -> _Rule | None:
    """Which events a person must act on. Everything else stays in the live feed only."""
    data = event.data or {}
    if event.type == "payment.failed":
        return _Rule(Notification.Kind.PAYMENT_FAILED, "payer", "A payment failed")
    if event.type == "milestone.status_updated" and data.get("new_status") == "submitted":
        return _Rule(
            Notification.Kind.MILESTONE_SUBMITTED, "payer", "A milestone is ready for review"
        )
    if event.type == "milestone.released":
        return _Rule(Notification.Kind.FUNDS_RELEASED, "payee", "Funds were released to you")
    if event.type == "milestone.funded":
        return _Rule(
            Notification.Kind.MILESTONE_FUNDED,
            "payee",
            "A milestone is funded: the money is held in escrow and you can start the work",
        )
    if event.type == "milestone.status_updated" and data.get("new_status") == "inspection":
        return _Rule(
            Notification.Kind.INSPECTION_REQUESTED,
            "payee",
            "The homeowner asked for an inspection before approving",
        )
    if event.type == "milestone.refunded":
        return _Rule(
            Notification.Kind.MILESTONE_REFUNDED,
            "payee",
            "Money held for a milestone was refunded to the homeowner",
        )
    if event.type.startswith("dispute."):
        return _Rule(Notification.Kind.DISPUTE_UPDATED, "parties", "A dispute was updated")
    if event.type == "billing.payment_due":
        return _Rule(Notification.Kind.PAYMENT_DUE, "payer", "A payment is due")
    if event.type == "circuit_breaker.opened":
        return _Rule(
            Notification.Kind.CIRCUIT_BREAKER,
            "operators",
            "A gateway circuit breaker opened: calls to the gateway are paused",
        )
    if event.type == "circuit_breaker.closed":
        return _Rule(
            Notification.Kind.CIRCUIT_BREAKER,
            "operators",
            "A gateway circuit breaker closed: calls to the gateway go through again",
        )
    return None


def _recipient_ids(event: Event, who: str) -> list[int]:
    data = event.data or {}
    audience = [int(user_id) for user_id in event.audience]
    if who == "parties":
        return audience
    if who == "operators":
        operators = get_user_model().objects.filter(pk__in=audience, is_staff=True, is_active=True)
        return list(operators.values_list("pk", flat=True))
    explicit = {
        "payer": ("payer_id", "homeowner_id"),
        "payee": ("payee_id", "contractor_id"),
    }[who]
    for field in explicit:
        if data.get(field):
            return [int(data[field])]
    role = "homeowner" if who == "payer" else "contractor"
    users = get_user_model().objects.filter(pk__in=audience, role=role)
    return list(users.values_list("pk", flat=True))


def _describe(event: Event) -> tuple[str, str]:
    data = event.data or {}
    if event.type.startswith("circuit_breaker."):
        return _describe_breaker(event.type, data), "/admin/payments/circuitbreaker/"
    parts = []
    if data.get("title"):
        parts.append(str(data["title"]))
    amount = data.get("refunded_amount", data.get("amount"))
    if isinstance(amount, int) and data.get("currency"):
        parts.append(format_amount(amount, str(data["currency"])))
    if event.type == "payment.failed":
        # The gateway's words for the payer ("Your card was declined."), never its code.
        parts.append(str(data.get("failure_message") or "The payment did not go through."))
    elif data.get("new_status"):
        parts.append(f"now {_STATUS_WORDS.get(data['new_status'], data['new_status'])}")
    url = f"/projects/{data['project_id']}/" if data.get("project_id") else ""
    return "; ".join(parts), url


# Status values in words, for people (the raw values stay in the API, events and admin).
_STATUS_WORDS = {
    "pending": "waiting for funding",
    "funding": "being funded",
    "funded": "funded and held in escrow",
    "submitted": "submitted for review",
    "inspection": "waiting for an inspection",
    "approved": "approved",
    "released": "released to the contractor",
    "refunded": "refunded to the homeowner",
    "disputed": "frozen while a dispute is open",
    "split": "split between both parties",
    "cancelled": "cancelled",
}


def _describe_breaker(event_type: str, data: dict) -> str:
    name = data.get("name") or "a gateway operation"
    if event_type == "circuit_breaker.closed":
        return f"{name}: calls go through again."
    parts = [f"{name}: calls are paused and new work is queued"]
    if isinstance(data.get("error_rate"), int | float):
        parts.append(f"{round(data['error_rate'] * 100)}% of recent calls failed")
    if data.get("retry_at"):
        try:
            moment = datetime.fromisoformat(data["retry_at"]).astimezone(UTC)
            parts.append(f"a probe call is tried after {moment:%Y-%m-%d %H:%M:%S} UTC")
        except (TypeError, ValueError):
            pass
    return "; ".join(parts) + "."


def notifications_create_for_event(*, event: Event) -> list[Notification]:
    """Create the notifications an event calls for (none for most events).

    Idempotent: unique per (user, "event:<id>:<kind>"). Joins the caller's transaction; the
    e-mails are queued after it commits."""
    rule = _rule_for(event)
    if rule is None:
        return []
    body, url = _describe(event)
    created = []
    for user_id in _recipient_ids(event, rule.recipients):
        notification = notification_create(
            user_id=user_id,
            kind=rule.kind,
            key=f"event:{event.position}:{rule.kind}",
            title=rule.title,
            body=body,
            url=url,
            event=event,
        )
        if notification is not None:
            created.append(notification)
    return created


def notification_create(
    *,
    user_id: int,
    kind: str,
    key: str,
    title: str,
    body: str = "",
    url: str = "",
    event: Event | None = None,
) -> Notification | None:
    """Create one notification unless one with this key exists (then return None).

    E-mail follows the user's preference; the send is queued after commit."""
    preference = NotificationPreference.objects.filter(user_id=user_id).first()
    wants_email = preference.wants_email(kind) if preference else True
    has_address = (
        get_user_model().objects.filter(pk=user_id, is_active=True).exclude(email="").exists()
    )
    email_status = (
        Notification.EmailStatus.PENDING
        if wants_email and has_address
        else Notification.EmailStatus.NOT_WANTED
    )
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                user_id=user_id,
                kind=kind,
                key=key,
                title=title,
                body=body,
                url=url,
                event=event,
                email_status=email_status,
            )
    except IntegrityError:
        return None
    if email_status == Notification.EmailStatus.PENDING:
        from realtime.tasks import notification_email_send_task

        transaction.on_commit(lambda: notification_email_send_task.delay(notification.pk))
    return notification


NO_EMAIL_BACKEND = "Not sent: no e-mail backend is configured (set EMAIL_URL)."


def notification_email_send(*, notification_id: int) -> bool:
    """Send a pending notification's e-mail once; returns whether it was sent now.

    A missing or already-sent notification is nothing to do. Without a backend that delivers
    anywhere (EMAIL_DELIVERY_CONFIGURED: production mode and no EMAIL_URL) nothing is sent
    and the notification is marked failed with that reason, never sent. Runs outside a
    transaction (the mail server call is slow); a crash after sending and before recording
    may send it twice, which beats never sending it."""
    notification = (
        Notification.objects.select_related("user")
        .filter(pk=notification_id, email_status=Notification.EmailStatus.PENDING)
        .first()
    )
    if notification is None:
        return False
    if not settings.EMAIL_DELIVERY_CONFIGURED:
        Notification.objects.filter(
            pk=notification.pk, email_status=Notification.EmailStatus.PENDING
        ).update(email_status=Notification.EmailStatus.FAILED, email_error=NO_EMAIL_BACKEND)
        logger.warning(
            "notification e-mail not sent: no e-mail backend is configured (EMAIL_URL)",
            extra={"notification_id": notification.pk, "kind": notification.kind},
        )
        return False
    lines = [notification.title, ""]
    if notification.body:
        lines.append(notification.body)
    if notification.url:
        lines.append(f"Open: {settings.PORTAL_BASE_URL.rstrip('/')}{notification.url}")
    lines += ["", "You can turn these e-mails off in your notification preferences."]
    send_mail(
        subject=notification.title,
        message="\n".join(lines),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[notification.user.email],
        fail_silently=False,
    )
    Notification.objects.filter(pk=notification.pk).update(
        email_status=Notification.EmailStatus.SENT, emailed_at=timezone.now()
    )
    return True


def notification_mark_read(*, notification_id: int, user) -> Notification:
    """Mark one of the user's notifications read. Idempotent (keeps the first read time).

    Raises NotificationNotFound, also for another user's notification."""
    updated = Notification.objects.filter(
        pk=notification_id, user=user, read_at__isnull=True
    ).update(read_at=timezone.now())
    notification = Notification.objects.filter(pk=notification_id, user=user).first()
    if notification is None:
        raise NotificationNotFound()
    del updated
    return notification


def notification_mark_all_read(*, user) -> int:
    """Mark every unread notification of the user read; returns how many changed."""
    return Notification.objects.filter(user=user, read_at__isnull=True).update(
        read_at=timezone.now()
    )


def notification_preference_update(
    *, user, email_enabled: bool | None = None, email_muted_kinds: list[str] | None = None
) -> NotificationPreference:
    """Change the user's e-mail preference (creating the row on first change)."""
    preference, _ = NotificationPreference.objects.get_or_create(user=user)
    if email_enabled is not None:
        preference.email_enabled = email_enabled
    if email_muted_kinds is not None:
        preference.email_muted_kinds = sorted(set(email_muted_kinds))
    preference.save()
    return preference
