from common.errors import Conflict, InvalidInput, NotFound, Unprocessable


class PaymentNotFound(NotFound):
    """No such payment."""


class PaymentMethodNotFound(NotFound):
    """No such payment method."""


class PaymentMethodInvalid(InvalidInput):
    """The payment method cannot be used."""

    field = "payment_method"


class PaymentMethodRefused(Unprocessable):
    """The gateway refused the payment method."""

    code = "payment_method_refused"


class RefundTooLarge(InvalidInput):
    """The refund is more than what is left to refund."""

    code = "refund_too_large"
    field = "amount"


class PaymentNotRefundable(Conflict):
    """The payment has not captured any money to refund."""

    code = "payment_not_refundable"


class FundingInProgress(Conflict):
    """The milestone already has a live funding payment."""

    code = "funding_in_progress"


class WebhookRejected(InvalidInput):
    """The webhook is not signed correctly or is not an event."""

    code = "webhook_rejected"


class TransferReversalInvalid(InvalidInput):
    """The gateway's transfer contradicts our payout (reversed more than was transferred, another
    currency or another transfer): nothing is applied, and a webhook carrying it fails at once
    (retrying cannot change the payload); an operator looks at it."""

    code = "transfer_reversal_invalid"


class PayoutNotFound(NotFound):
    """No such payout."""


class PayoutRetryRefused(Conflict):
    """Another payout of this milestone is still on its way; retry once it has settled."""

    code = "payout_in_progress"


class UnknownObject(Exception):
    """A webhook refers to an object we do not know (yet): park the event and retry later."""
