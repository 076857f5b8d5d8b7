"""An operator's replay of a gateway webhook from the inbox (the admin's action).

Processing itself is payments.services.webhooks; a replay reuses its `apply_event` (the
handler table) and `webhook_process`, and adds one rule: an event already applied never goes back
to parked or ignored."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from payments.models import WebhookEvent
from payments.services.webhooks import apply_event, webhook_process

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)

APPLIED = (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED)


@dataclass(frozen=True)
class Replay:
    """What an operator's replay did: the inbox row's status afterwards, whether the replay
    applied anything, and why it could not run (then nothing changed)."""

    status: str
    changed: bool
    error: str = ""

    def __str__(self) -> str:
        if self.error:
            return f"{self.status} (the replay failed and changed nothing: {self.error})"
        return f"{self.status} ({'applied now' if self.changed else 'changed nothing'})"


def webhook_replay(*, webhook_event_id: int, actor: User | None = None) -> Replay | None:
    """An operator asks for an event to be processed again (the admin's action).

    An event never applied (received, parked, failed) is processed as if it had just
    arrived: processed, ignored, or parked again. One already applied (processed or ignored)
    is run again under its row lock, and its status never goes back: the handlers are
    idempotent, so it normally changes nothing and stays `processed` (an ignored one that now
    applies becomes processed); if the handler fails now (the object cannot be found, the
    payload contradicts a newer state), the effects applied the first time stand, the row
    keeps its status with the error in `last_error`, and the result says so. Returns None
    for an unknown row."""
    logger.info(
        "webhook replay", extra={"event": webhook_event_id, "actor": getattr(actor, "pk", None)}
    )
    updated = (
        WebhookEvent.objects.filter(pk=webhook_event_id)
        .exclude(status__in=APPLIED)
        .update(status=WebhookEvent.Status.RECEIVED, next_attempt_at=None, last_error="")
    )
    if updated:
        status = webhook_process(webhook_event_id=webhook_event_id)
        return Replay(status=status, changed=status == WebhookEvent.Status.PROCESSED)
    try:
        with transaction.atomic(durable=True):
            row = WebhookEvent.objects.select_for_update().filter(pk=webhook_event_id).first()
            if row is None:
                return None
            if row.status not in APPLIED:
                # Reset by another replay in the meantime, which processes it.
                return Replay(status=row.status, changed=False)
            changed = apply_event(row)
            row.attempts += 1
            row.last_error = ""
            if changed:
                row.status = WebhookEvent.Status.PROCESSED
                row.processed_at = timezone.now()
            row.save(update_fields=["status", "attempts", "processed_at", "last_error"])
            return Replay(status=row.status, changed=changed)
    except Exception as exc:
        # Whatever it was, the transaction rolled it back; the first processing stands.
        logger.warning(
            "webhook replay failed; the effects applied before stand",
            extra={"webhook_event": webhook_event_id, "error": type(exc).__name__},
        )
        error = f"{type(exc).__name__}: {exc}"
        WebhookEvent.objects.filter(pk=webhook_event_id).update(last_error=f"replay: {error}"[:255])
        status = (
            WebhookEvent.objects.filter(pk=webhook_event_id)
            .values_list("status", flat=True)
            .first()
        )
        return Replay(status=status, changed=False, error=error)
