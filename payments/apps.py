from django.apps import AppConfig


def _start_payout(milestone_id: int) -> None:
    from payments.tasks import payout_start_task

    payout_start_task.delay(milestone_id)


def _start_refund(milestone_id: int) -> None:
    from payments.tasks import milestone_refund_start_task

    milestone_refund_start_task.delay(milestone_id)


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self):
        # Escrow asks for gateway work through its after-commit hooks (no import of payments
        # there); the handlers only enqueue. payments.settlements_sweep covers lost calls.
        from escrow import hooks

        hooks.register("milestone.released", _start_payout)
        hooks.register("milestone.refunded", _start_refund)
