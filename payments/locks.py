"""Row locks in the documented order: project → milestone (escrow.locks) → payment → refund or
payout → ledger accounts. `of=("self",)` keeps joined rows unlocked."""

from escrow.locks import milestone_for_update
from payments.exceptions import PaymentNotFound
from payments.models import Payment, Payout, Refund


def payment_for_update(*, payment_id: int, with_milestone: bool = True) -> Payment:
    """Lock the payment's project and milestone (when asked and it has one: a top-up may
    not), then the payment."""
    milestone = None
    if with_milestone:
        row = Payment.objects.filter(pk=payment_id).values("milestone_id").first()
        if row is None:
            raise PaymentNotFound()
        if row["milestone_id"] is not None:
            milestone = milestone_for_update(milestone_id=row["milestone_id"])
    payment = Payment.objects.select_for_update(of=("self",)).filter(pk=payment_id).first()
    if payment is None:
        raise PaymentNotFound()
    if milestone is not None:
        payment.milestone = milestone
    return payment


def refund_for_update(*, refund_id: int) -> Refund:
    return Refund.objects.select_for_update(of=("self",)).get(pk=refund_id)


def payout_for_update(*, payout_id: int) -> Payout:
    return Payout.objects.select_for_update(of=("self",)).get(pk=payout_id)
