from django.apps import AppConfig


def _start_settlement_work(settlement) -> None:
    """A settled milestone: pay out its released part and refund its refunded part (the tasks
    size both from escrow's milestone_settlement and are idempotent)."""
    from payments.tasks import milestone_refund_start_task, payout_start_task

    if settlement.released_amount:
        payout_start_task.delay(settlement.milestone_id)
    if settlement.refunded_amount:
        milestone_refund_start_task.delay(settlement.milestone_id)


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self):
        # Escrow asks for gateway work through its typed after-commit reactions (no import of
        # payments there); the handler only enqueues. payments.settlements_sweep covers lost
        # calls.
        from escrow import reactions

        reactions.milestone_settled.register(_start_settlement_work)
