"""Payments' part of `manage.py check_ledger` (escrow.invariants calls funding_violations):
every captured payment is posted once, every funding entry posted by payments belongs to a
captured payment of the same amount, every payment's amount_refunded is the sum of its
succeeded refunds, no refund the gateway confirmed (its answer to our call, or a webhook in
the inbox) is still pending, the ledger holds exactly the pending operator refunds (the
refund hold rule, escrow/services/holds.py), every payout's ledger steps match its status,
its reversal entries add up to the amount the gateway reversed, and what its retries pay
again is what it left owed.

Run it on a quiet database: a refund between the gateway's answer and the transaction that
records it (milliseconds) shows as confirmed but pending."""

from django.db.models import Q, Sum

from escrow.models import JournalEntry
from escrow.selectors import refund_holds_by_reference
from escrow.services.payables import REVERSAL_PREFIX
from payments.models import GatewayAttempt, Payment, Payout, Refund, WebhookEvent
from payments.services.refunds import escrow_reference

_REFUND_EVENTS = ("refund.created", "refund.updated", "charge.refunded")


def funding_violations(*, limit: int = 100) -> list[str]:
    problems: list[str] = []

    def add(message: str) -> bool:
        problems.append(message)
        return len(problems) >= limit

    fund_refs = set(
        JournalEntry.objects.filter(
            kind=JournalEntry.Kind.FUND, reference__startswith="fund:"
        ).values_list("reference", flat=True)
    )
    captured = Payment.objects.filter(
        status__in=Payment.CAPTURED, purpose=Payment.Purpose.FUNDING
    ).values_list("pk", "amount", "amount_refunded")
    for payment_id, _amount, _refunded in captured.iterator():
        if f"fund:{payment_id}" not in fund_refs and add(
            f"payment {payment_id} is captured but has no ledger entry fund:{payment_id}"
        ):
            return problems
    numeric = {
        int(ref.split(":", 1)[1]): ref for ref in fund_refs if ref.split(":", 1)[1].isdigit()
    }
    amounts = dict(
        JournalEntry.objects.filter(reference__in=numeric.values()).values_list(
            "reference", "amount"
        )
    )
    payments = {
        pk: (status, amount)
        for pk, status, amount in Payment.objects.filter(pk__in=numeric).values_list(
            "pk", "status", "amount"
        )
    }
    for payment_id, reference in numeric.items():
        status, amount = payments.get(payment_id, (None, None))
        if status is None:
            continue  # posted by something other than payments (escrow's own tests, imports)
        if status not in Payment.CAPTURED and add(
            f"{reference} is posted but payment {payment_id} is {status}"
        ):
            return problems
        if amounts.get(reference) != amount and add(
            f"{reference} posts {amounts.get(reference)} but payment {payment_id} is {amount}"
        ):
            return problems
    for problem in _refund_problems():
        if add(problem):
            return problems
    references = set(
        JournalEntry.objects.filter(
            kind__in=[
                JournalEntry.Kind.PAYOUT_STARTED,
                JournalEntry.Kind.PAYOUT_PAID,
                JournalEntry.Kind.PAYOUT_FAILED,
            ]
        ).values_list("reference", flat=True)
    )
    paid_steps = (True, True, False)
    expected = {
        Payout.Status.PENDING: (True, False, False),
        Payout.Status.NEEDS_ACCOUNT: (True, False, False),
        Payout.Status.PAID: paid_steps,
        Payout.Status.PARTIALLY_REVERSED: paid_steps,
        Payout.Status.REVERSED: paid_steps,
        Payout.Status.FAILED: (True, False, True),
    }
    reversals = _reversal_steps()
    payouts = Payout.objects.values_list("pk", "status", "amount_reversed")
    for payout_id, status, amount_reversed in payouts.iterator():
        found = tuple(
            f"{prefix}:{payout_id}" in references
            for prefix in ("payout", "payout-paid", "payout-failed")
        )
        if found != expected[status] and add(
            f"payout {payout_id} is {status} but its ledger steps are "
            f"started={found[0]} paid={found[1]} failed={found[2]}"
        ):
            return problems
        for problem in _reversal_problems(payout_id, amount_reversed, reversals.pop(payout_id, [])):
            if add(problem):
                return problems
    for payout_id in reversals:
        if add(f"reversal entries for payout {payout_id}, which does not exist"):
            return problems
    for problem in _retry_problems():
        if add(problem):
            return problems
    return problems


def _retry_problems() -> list[str]:
    """A failed or reversed payout is paid again at most for what it left owed (all of a
    failed one's amount, a reversed one's amount_reversed), and its retries together pay
    exactly the owed amount the latest of them covers: nothing is paid twice."""
    retries: dict[int, list[tuple[int, int]]] = {}
    rows = Payout.objects.filter(retry_of__isnull=False).values_list(
        "retry_of_id", "retry_of_amount_owed", "amount"
    )
    for source_id, owed, amount in rows.iterator():
        retries.setdefault(source_id, []).append((owed, amount))
    problems = []
    sources = Payout.objects.filter(pk__in=retries).values_list(
        "pk", "status", "amount", "amount_reversed"
    )
    for source_id, status, amount, amount_reversed in sources:
        if status == Payout.Status.FAILED:
            owed = amount
        elif status in Payout.REVERSED_STATUSES:
            owed = amount_reversed
        else:
            owed = 0
        covered = max(step for step, _ in retries[source_id])
        paid_again = sum(paid for _, paid in retries[source_id])
        if covered > owed:
            problems.append(
                f"payout {source_id} is {status} and owes {owed} again, but its retries "
                f"cover {covered}"
            )
        if paid_again != covered:
            problems.append(
                f"payout {source_id}'s retries pay {paid_again} in all but cover {covered}"
            )
    return problems


def _refund_problems() -> list[str]:
    problems = []
    refunded = dict(
        Refund.objects.filter(status=Refund.Status.SUCCEEDED)
        .values("payment_id")
        .annotate(total=Sum("amount"))
        .values_list("payment_id", "total")
    )
    payments = Payment.objects.filter(Q(amount_refunded__gt=0) | Q(pk__in=list(refunded)))
    for payment_id, amount_refunded in payments.values_list("pk", "amount_refunded"):
        if refunded.get(payment_id, 0) != amount_refunded:
            problems.append(
                f"payment {payment_id} has refunded {amount_refunded} but its succeeded refunds "
                f"sum to {refunded.get(payment_id, 0)}"
            )
    pending = {
        refund.pk: refund
        for refund in Refund.objects.filter(status=Refund.Status.PENDING).only(
            "pk", "amount", "reason", "gateway_refund_id"
        )
    }
    problems += _confirmed_but_pending(pending)
    holds = refund_holds_by_reference()
    for refund in pending.values():
        if refund.reason != Refund.Reason.OPERATOR:
            continue  # escrow's own refunds were posted by its settlement
        held = holds.pop(escrow_reference(refund), 0)
        if held != refund.amount:
            problems.append(
                f"refund {refund.pk} is pending for {refund.amount} but its hold holds {held}"
            )
    for reference, held in sorted(holds.items()):
        # Holds named otherwise are not payments' (escrow's own tests); escrow checks them
        # against their milestones.
        if held and reference.startswith("payment-refund:"):
            problems.append(f"hold:refund:{reference} holds {held} for no pending refund")
    return problems


def _confirmed_but_pending(pending: dict[int, Refund]) -> list[str]:
    """Pending refunds the gateway said succeeded: in its answer to our call (GatewayAttempt)
    or in a refund webhook stored in the inbox."""
    if not pending:
        return []
    confirmed: dict[int, str] = {}
    attempts = GatewayAttempt.objects.filter(
        refund_id__in=list(pending),
        operation=GatewayAttempt.Operation.REFUND,
        outcome=GatewayAttempt.Outcome.SUCCEEDED,
        gateway_status="succeeded",
    ).values_list("refund_id", "idempotency_key")
    for refund_id, key in attempts:
        confirmed.setdefault(refund_id, f"the gateway's answer to {key}")
    by_gateway_id = {r.gateway_refund_id: r.pk for r in pending.values() if r.gateway_refund_id}
    events = WebhookEvent.objects.filter(type__in=_REFUND_EVENTS).values_list(
        "event_id", "status", "payload"
    )
    for event_id, status, payload in events.iterator():
        for obj in _refund_objects(payload):
            refund_id = _refund_id_of(obj, by_gateway_id)
            if refund_id in pending and obj.get("status") == "succeeded":
                confirmed.setdefault(refund_id, f"webhook {event_id} ({status})")
    return [
        f"refund {refund_id} is pending but the gateway confirmed it: {source}"
        for refund_id, source in sorted(confirmed.items())
    ]


def _refund_objects(payload) -> list[dict]:
    obj = ((payload or {}).get("data") or {}).get("object") or {}
    if not isinstance(obj, dict):
        return []
    if obj.get("object") == "charge":
        items = (obj.get("refunds") or {}).get("data") or []
        return [item for item in items if isinstance(item, dict)]
    return [obj]


def _refund_id_of(obj: dict, by_gateway_id: dict[str, int]) -> int | None:
    metadata = obj.get("metadata") or {}
    raw = str(metadata.get("refund_id", "")) if isinstance(metadata, dict) else ""
    if raw.isdigit():
        return int(raw)
    return by_gateway_id.get(str(obj.get("id") or ""))


def _reversal_steps() -> dict[int, list[tuple[int, int]]]:
    """payout id -> [(cumulative amount reversed, amount posted)] from the reversal entries."""
    steps: dict[int, list[tuple[int, int]]] = {}
    rows = JournalEntry.objects.filter(reference__startswith=REVERSAL_PREFIX).values_list(
        "reference", "amount"
    )
    for reference, amount in rows.iterator():
        payout_id, _, cumulative = reference[len(REVERSAL_PREFIX) :].partition(":")
        if payout_id.isdigit() and cumulative.isdigit():
            steps.setdefault(int(payout_id), []).append((int(cumulative), amount))
    return steps


def _reversal_problems(payout_id: int, amount_reversed: int, steps) -> list[str]:
    """Each step posts the growth of the cumulative amount, and the last step is the payout's
    amount_reversed (so what went back to payable is exactly what the gateway reversed)."""
    problems = []
    previous = 0
    for cumulative, amount in sorted(steps):
        if amount != cumulative - previous:
            problems.append(
                f"{REVERSAL_PREFIX}{payout_id}:{cumulative} posts {amount}, "
                f"expected {cumulative - previous}"
            )
        previous = cumulative
    if previous != amount_reversed:
        problems.append(
            f"payout {payout_id} has reversed {amount_reversed} but its reversal entries "
            f"reach {previous}"
        )
    return problems
