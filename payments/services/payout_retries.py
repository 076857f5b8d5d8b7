"""Paying a contractor again what a failed or reversed payout left owed (payout_retry).

The new payout is an ordinary one from then on: payouts.payout_process sends it and
payouts.payout_apply records the outcome, under its own ledger references and transfer
key. payments/README.md ("Paying again") has the rule."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction

from escrow.exceptions import IllegalTransition
from escrow.services import payables
from payments.exceptions import PayoutNotFound, PayoutRetryRefused
from payments.models import Payout
from payments.services import payouts
from payments.services._events import emit_payout
from payments.services.payouts import enqueue_payout

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)


def payout_retry(*, payout_id: int, actor: User) -> Payout:
    """Pay the contractor again what a failed or reversed payout left owed.

    Caller: an operator (the admin's "retry" action); anyone else gets PayoutNotFound. A
    failed payout put its whole amount back in payable:user:<id> (payout-failed:<id>), a
    (partially) reversed one its amount_reversed (payout-reversal:<id>:*); this creates a new
    payout for it (`retry_of` = that payout, same milestone, payee, provider, currency and
    funding charge), posts payable → in transit ("payout:<new id>"), emits payout.started
    with `retry_of`, and sends the transfer after commit under the new payout's own key, so
    the money goes payable → in transit → gateway again and check_ledger holds.

    Exactly once: the new row is unique per (retry_of, amount owed) in the database and the
    payout is locked while deciding, so retrying the same payout again, or two operators at
    once, return the same new payout. A reversal that grows after a retry is owed too: the
    next retry pays the growth only. A payout still pending or waiting for an account is
    not duplicated: its own transfer is sent again (same key) and it is returned.

    Raises PayoutNotFound, IllegalTransition (a paid payout owes nothing), PayoutRetryRefused
    (another payout of the milestone is still on its way: one active payout per milestone,
    also a database constraint) and InsufficientFunds (payable no longer holds the money,
    e.g. an operator moved it); nothing is written then."""
    if not getattr(actor, "is_staff", False):
        raise PayoutNotFound()
    with transaction.atomic(durable=True):
        source = Payout.objects.select_for_update(of=("self",)).filter(pk=payout_id).first()
        if source is None:
            raise PayoutNotFound()
        if source.status in Payout.ACTIVE:
            transaction.on_commit(lambda: enqueue_payout(source))
            return source
        if source.status not in Payout.RETRYABLE:
            raise IllegalTransition(
                obj_name=f"Payout {source.pk}", current=source.status, target="retried"
            )
        owed = source.amount if source.status == Payout.Status.FAILED else source.amount_reversed
        latest = source.retries.order_by("-retry_of_amount_owed").first()
        already = latest.retry_of_amount_owed if latest is not None else 0
        if owed <= already:
            return latest
        try:
            with transaction.atomic():
                payout = Payout.objects.create(
                    milestone_id=source.milestone_id,
                    payment_id=source.payment_id,
                    payee_id=source.payee_id,
                    provider=source.provider,
                    amount=owed - already,
                    currency=source.currency,
                    transfer_group=source.transfer_group,
                    retry_of=source,
                    retry_of_amount_owed=owed,
                )
        except IntegrityError:
            same = source.retries.filter(retry_of_amount_owed=owed).first()
            if same is not None:
                return same
            active = Payout.objects.filter(
                milestone_id=source.milestone_id, status__in=Payout.ACTIVE
            ).first()
            raise PayoutRetryRefused(
                f"Payout {active.pk if active else '?'} of milestone {source.milestone_id} is "
                f"still {active.status if active else 'on its way'}; retry payout {source.pk} "
                "once it has settled."
            ) from None
        payables.payable_transfer_started(payouts._transfer(payout))
        emit_payout("payout.started", payout, retry_of=source.pk)
        logger.info(
            "payout retried",
            extra={
                "payout_id": payout.pk,
                "retry_of": source.pk,
                "amount": payout.amount,
                "currency": payout.currency,
                "actor_id": actor.pk,
            },
        )
        transaction.on_commit(lambda: enqueue_payout(payout))
    return payout
