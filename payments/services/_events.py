"""The events payments emits, in one place so their data stays as the contract says:
payment.* → payment_id, amount, currency, status (+ previous_status, new_status)."""

from django.core.mail import send_mail
from django.db import transaction

from payments.models import Payment, Payout
from realtime.events import emit


def payment_channels(payment: Payment) -> list[str]:
    return [
        f"user.{payment.payer_id}.payments",
        f"user.{payment.payee_id}.payments",
        f"payment.{payment.pk}",
        f"project.{payment.project_id}",
        f"milestone.{payment.milestone_id}",
    ]


def payment_data(payment: Payment, **extra) -> dict:
    return {
        "payment_id": payment.pk,
        "amount": payment.amount,
        "currency": payment.currency,
        "status": payment.status,
        "amount_refunded": payment.amount_refunded,
        "milestone_id": payment.milestone_id,
        "project_id": payment.project_id,
        # Who is who, so each reader is told what concerns them (portal, notifications).
        "payer_id": payment.payer_id,
        "payee_id": payment.payee_id,
        "failure_code": payment.failure_code or None,
        **extra,
    }


def emit_payment(type: str, payment: Payment, **extra) -> None:
    emit(
        type,
        payment_data(payment, **extra),
        aggregate=("payment", payment.pk),
        audience=payment.party_ids(),
        channels=payment_channels(payment),
    )


def emit_payout(type: str, payout: Payout, *, also_to: list[int] = (), **extra) -> None:
    emit(
        type,
        {
            "payout_id": payout.pk,
            "milestone_id": payout.milestone_id,
            "payment_id": payout.payment_id,
            "amount": payout.amount,
            "currency": payout.currency,
            "status": payout.status,
            **extra,
        },
        aggregate=("payout", payout.pk),
        audience=[payout.payee_id, *also_to],
        channels=[f"user.{payout.payee_id}.payments", f"milestone.{payout.milestone_id}"],
    )


def operator_ids() -> list[int]:
    from accounts.models import User

    return list(User.objects.filter(role=User.Role.OPERATOR).values_list("pk", flat=True))


def operators_email(*, operators: list[int], subject: str, message: str) -> None:
    """E-mail these operators after commit (never inside the transaction; a rollback sends
    nothing). Operators without an address are skipped."""
    from accounts.models import User

    emails = list(
        User.objects.filter(pk__in=operators).exclude(email="").values_list("email", flat=True)
    )
    if emails:
        transaction.on_commit(lambda: send_mail(subject, message, None, emails, fail_silently=True))
