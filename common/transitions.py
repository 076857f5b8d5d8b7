"""The one way a status changes: `transition(obj, to=...)`.

Every model with a state machine declares it as a class attribute `TRANSITIONS` (status → the
set of statuses it may become): Project and Milestone in escrow; Payment, Payout, Refund and
PaymentMethod in payments. `transition` reads that table, refuses any other move with
IllegalTransition (naming the current state), and saves the status with `updated_at` and the
caller's other changed fields in one UPDATE, or hands them to a `Saves` collector
(common.bulk) when the caller writes a batch of rows at the end.

The apps wrap it with what their models add to a move (escrow's timestamps, review window and
freeze rule and milestone.status_updated; payments' 3-D Secure clock and payment.status_updated),
but no code anywhere else assigns one of these models' statuses: tests/common/test_transitions.py
walks every table and scans the source for assignments (the inbox and outbox records,
WebhookEvent and WebhookDelivery, have no table and are listed there with their reasons).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.utils import timezone

from common.errors import IllegalTransition

if TYPE_CHECKING:
    from common.bulk import Saves


def allowed(obj, to: str) -> bool:
    """Whether `obj`'s table lets it become `to` from where it is."""
    return to in type(obj).TRANSITIONS[obj.status]


def transition(
    obj,
    *,
    to: str,
    changes: dict | None = None,
    also: Iterable[str] = (),
    saves: Saves | None = None,
) -> str:
    """Move `obj` (a row the caller holds locked) to `to` if its model's table allows it, set
    the `changes` (field → value) that go with the move, and save the status, `updated_at`
    (when the model has one), the changes and the `also` fields (already set by the caller) in
    one UPDATE. With `saves`, the fields are collected for the caller's one UPDATE instead.
    Returns the previous status. Raises IllegalTransition and changes nothing (in the database
    or on `obj`) when the table refuses."""
    model = type(obj)
    previous = obj.status
    if to not in model.TRANSITIONS[previous]:
        raise IllegalTransition(obj_name=f"{model.__name__} {obj.pk}", current=previous, target=to)
    obj.status = to
    for name, value in (changes or {}).items():
        setattr(obj, name, value)
    fields = {"status", *(changes or {}), *also}
    if any(field.name == "updated_at" for field in model._meta.concrete_fields):
        obj.updated_at = timezone.now()
        fields.add("updated_at")
    if saves is not None:
        saves.add(obj, fields)
    else:
        obj.save(update_fields=sorted(fields))
    return previous
