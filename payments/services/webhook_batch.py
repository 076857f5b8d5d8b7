"""The batch path for the commonest gateway event: many `payment_intent.succeeded` deliveries
applied in one transaction.

One by one (webhooks._process), each success costs a transaction of its own; here a batch
shares the locks, look-ups and final UPDATEs of all its rows, a fixed number of statements
whatever its size, and each entry is still its own ledger call (the counts are in
docs/PERFORMANCE.md, "Measurements behind code comments"). The effects are the ones
webhook_process would have had, row for row and event for event
(tests/payments/test_webhook_batch.py compares the two).

Only the plain case is taken: a success for a payment of ours, for this provider, whose status
moves to completed, with the amount and currency asked, for a milestone in `funding`
(escrow.services.FundingBatch decides that part), with no other delivery in the batch about
the same payment, intent or milestone. Everything else, and everything if the batch fails for
any reason, is left to webhook_process, one by one, after this commits: a delivery is never
lost by this path, at worst it is processed the slow way. Rows another transaction holds
(an inbox row, a project) are skipped, not waited for, and handed back as busy."""

from __future__ import annotations

import logging
from collections import Counter

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from common.bulk import Saves
from common.errors import DomainError
from escrow.locks import milestones_for_update
from escrow.services import FundingBatch
from payments.gateways import PROVIDERS, EventKind, parse_webhook
from payments.gateways.events import BATCHABLE_TYPES
from payments.models import Payment, WebhookEvent
from payments.services import intents
from realtime.events import emits_batched

logger = logging.getLogger(__name__)
Status = Payment.Status
_OPEN = (WebhookEvent.Status.RECEIVED, WebhookEvent.Status.PARKED)


def webhook_process_batch(webhook_event_ids: list[int]) -> tuple[list[int], list[int]]:
    """Apply the batch's plain payment successes in one transaction, with any others waiting
    in the inbox up to PAYMENTS_WEBHOOK_BATCH_MAX. Returns two lists of the batch's own ids:
    the ones left for webhook_process (this path does not take them, or the batch failed:
    then all of them), and the busy ones, whose inbox row or project another transaction
    holds (a worker's batch, most likely, that applies them or lets them go when it commits;
    the caller tries them again shortly instead of waiting)."""
    try:
        with transaction.atomic(durable=True):
            return _apply(webhook_event_ids)
    except Exception:
        logger.exception(
            "webhook batch failed; processing its events one by one",
            extra={"events": len(webhook_event_ids)},
        )
        return list(webhook_event_ids), []


def _references(event) -> list[tuple[str, object]]:
    """What a delivery is about, so two in one batch about the same thing are left in order."""
    found = []
    ref = event.payment
    if ref is not None and ref.payment_id is not None:
        found.append(("payment", ref.payment_id))
    if ref is not None and ref.intent_id:
        found.append(("intent", ref.intent_id))
    return found


def _apply(ids: list[int]) -> tuple[list[int], list[int]]:
    rows = list(
        WebhookEvent.objects.select_for_update(skip_locked=True).filter(pk__in=ids).order_by("pk")
    )
    locked = {row.pk for row in rows}
    rows = [row for row in rows if row.status in _OPEN]
    finished = locked - {row.pk for row in rows}  # processed, ignored or failed already
    room = settings.PAYMENTS_WEBHOOK_BATCH_MAX - len(rows)
    if room > 0:
        # Top up with successes received since (their own tasks, when they come, find them
        # done): a worker that falls behind takes bigger batches instead of paying a task's
        # overhead per handful of events. Only rows this path may take; the rest wait for
        # their own task.
        rows += (
            WebhookEvent.objects.select_for_update(skip_locked=True)
            .filter(status=WebhookEvent.Status.RECEIVED, type__in=BATCHABLE_TYPES)
            .exclude(pk__in=ids)
            .order_by("pk")[:room]
        )

    events, about = {}, Counter()  # events: row id → (its GatewayEvent, its references)
    for row in rows:
        if row.provider not in PROVIDERS or not isinstance(row.payload, dict):
            continue
        try:
            event = parse_webhook(row.provider, row.payload, type=row.type)
        except (KeyError, TypeError, ValueError, AttributeError, DomainError):
            continue  # malformed: the one-by-one path records the error on the row
        events[row.pk] = event, _references(event)
        about.update(events[row.pk][1])
    candidates = []  # (row, payment id, intent)
    for row in rows:
        if row.type not in BATCHABLE_TYPES or row.pk not in events:
            continue
        event, references = events[row.pk]
        if (
            event.kind != EventKind.PAYMENT_UPDATED
            or event.payment.payment_id is None
            or any(about[ref] > 1 for ref in references)
        ):
            continue
        candidates.append((row, event.payment.payment_id, event.intent))

    done, held = _apply_successes(candidates)
    busy = (set(ids) - locked) | held
    left = [pk for pk in ids if pk not in done and pk not in finished and pk not in busy]
    return left, [pk for pk in ids if pk in busy]


def _apply_successes(candidates) -> tuple[set[int], set[int]]:
    """Returns the ids of the rows applied, and of those whose project was held elsewhere."""
    if not candidates:
        return set(), set()
    milestone_of = dict(
        Payment.objects.filter(pk__in=[payment_id for _, payment_id, _ in candidates])
        .exclude(milestone_id=None)
        .values_list("pk", "milestone_id")
    )
    # The documented lock order: projects, milestones, then payments, each by ascending id.
    # A project another worker's batch holds is skipped, not waited for: its rows are busy
    # (tried again shortly) or, if they were only topped up, left to their own task.
    milestones = milestones_for_update(milestone_ids=milestone_of.values(), skip_locked=True)
    payments = {
        payment.pk: payment
        for payment in Payment.objects.select_for_update(of=("self",))
        .filter(
            pk__in=[pk for pk, milestone_id in milestone_of.items() if milestone_id in milestones]
        )
        .order_by("pk")
    }
    held = {
        row.pk
        for row, payment_id, _ in candidates
        if payment_id in milestone_of and milestone_of[payment_id] not in milestones
    }
    per_milestone = Counter(milestone_of.values())
    chosen, offers = [], {}
    for row, payment_id, intent in candidates:
        payment = payments.get(payment_id)
        if (
            payment is None
            or payment.provider != row.provider
            or payment.purpose != Payment.Purpose.FUNDING
            or payment.milestone_id not in milestones
            or per_milestone[payment.milestone_id] > 1
            or intents.payment_intent_check(payment, intent, quiet=True) != Status.COMPLETED
        ):
            continue
        chosen.append((row, payment, intent))
        offers[payment.milestone_id] = (
            payment.amount,
            payment.currency,
            f"{payment.pk}",
            payment.provider,
        )
    saves = Saves()
    funding = FundingBatch(milestones, saves=saves)
    fundable = funding.prepare(offers)
    done_rows = []
    with emits_batched():
        for row, payment, intent in chosen:
            if payment.milestone_id not in fundable:
                continue
            payment.milestone = milestones[payment.milestone_id]
            # The same action as one by one (intents.apply_intent), its rows saved below.
            intents.payment_completed_locked(
                payment, also=intents.gateway_ids(payment, intent), funding=funding, saves=saves
            )
            done_rows.append(row)
        saves.flush()
        if done_rows:
            WebhookEvent.objects.filter(pk__in=[row.pk for row in done_rows]).update(
                status=WebhookEvent.Status.PROCESSED,
                attempts=F("attempts") + 1,
                processed_at=timezone.now(),
                next_attempt_at=None,
                last_error="",
            )
    return {row.pk for row in done_rows}, held
