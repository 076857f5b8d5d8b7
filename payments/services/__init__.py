"""Every write in payments. Import from here: `from payments import services`."""

from payments.services.funding import payment_cancel, payment_fund
from payments.services.methods import (
    payment_method_create,
    payment_method_remove,
    payment_method_set_default,
    payment_methods_expiry_check,
)
from payments.services.payout_retries import payout_retry
from payments.services.payouts import payout_account_set, payout_process, payout_start
from payments.services.processing import payment_process
from payments.services.reconciliation import reconcile
from payments.services.refunds import milestone_refund_start, payment_refund, refund_process
from payments.services.sweeps import settlements_sweep, work_due
from payments.services.webhook_replay import webhook_replay
from payments.services.webhooks import (
    webhook_process,
    webhook_process_many,
    webhook_receive,
    webhooks_due,
)

__all__ = [
    "milestone_refund_start",
    "payment_cancel",
    "payment_fund",
    "payment_method_create",
    "payment_method_remove",
    "payment_method_set_default",
    "payment_methods_expiry_check",
    "payment_process",
    "payment_refund",
    "payout_account_set",
    "payout_process",
    "payout_retry",
    "payout_start",
    "reconcile",
    "refund_process",
    "settlements_sweep",
    "webhook_process",
    "webhook_process_many",
    "webhook_receive",
    "webhook_replay",
    "webhooks_due",
    "work_due",
]
