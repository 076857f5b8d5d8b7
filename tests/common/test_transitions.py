"""One transition mechanism: common.transitions.transition reads every model's table.

For each of the six models with a state machine (Project, Milestone, Payment, Payout, Refund,
PaymentMethod): every status of the model's choices has a row in its TRANSITIONS table; every
move the table allows is made by `transition` (status and updated_at saved, the previous
status returned); every other move between two different statuses raises IllegalTransition
and changes nothing in the database.

And no code outside common/transitions.py assigns one of those statuses: the source scan
below parses the apps and fails on `x.status = ...` and on writes of a `status` column by
`.update(...)`, `.update_or_create(...)`, `.bulk_update(...)`, `update_rows(...)` or
`setattr(x, "status", ...)`, except the inbox/outbox records listed in INBOX_OUTBOX."""

from __future__ import annotations

import ast
import datetime
import itertools
from pathlib import Path

import pytest

from common.bulk import Saves
from common.errors import IllegalTransition
from common.transitions import allowed, transition
from escrow.models import Milestone, Project
from payments.models import Payment, PaymentMethod, Payout, Refund
from tests.escrow.factories import MilestoneFactory, ProjectFactory
from tests.factories import HomeownerFactory

MODELS = [Project, Milestone, Payment, Payout, Refund, PaymentMethod]
LONG_AGO = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)


def _payment() -> Payment:
    milestone = MilestoneFactory()
    project = milestone.project
    return Payment.objects.create(
        milestone=milestone,
        project=project,
        payer=project.homeowner,
        payee=project.contractor,
        provider="sandbox",
        amount=milestone.amount,
        currency=project.currency,
    )


def _payout() -> Payout:
    milestone = MilestoneFactory()
    return Payout.objects.create(
        milestone=milestone,
        payee=milestone.project.contractor,
        provider="sandbox",
        amount=1_000,
        currency=milestone.project.currency,
    )


BUILD = {
    Project: ProjectFactory,
    Milestone: MilestoneFactory,
    Payment: _payment,
    Payout: _payout,
    Refund: lambda: Refund.objects.create(payment=_payment(), amount=100, currency="usd"),
    PaymentMethod: lambda: PaymentMethod.objects.create(
        user=HomeownerFactory(), provider="sandbox", token="pm_card_visa"
    ),
}


def _fields_for(model, status: str) -> dict:
    """Other columns a row in `status` must have for the database's checks: a payout's
    reversed amount goes with its status (payout_reversal_matches_status)."""
    if model is Payout:
        return {
            "amount_reversed": {
                Payout.Status.PARTIALLY_REVERSED: 400,
                Payout.Status.REVERSED: 1_000,
            }.get(status, 0)
        }
    return {}


def _statuses(model) -> list[str]:
    return [value for value, _label in model._meta.get_field("status").choices]


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_every_status_has_a_row_in_its_models_table(model):
    statuses = set(_statuses(model))

    assert set(model.TRANSITIONS) == statuses
    assert set().union(*model.TRANSITIONS.values()) <= statuses


@pytest.mark.django_db
@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_every_move_in_the_table_is_made_and_every_other_is_refused(model):
    obj = BUILD[model]()
    row = model.objects.filter(pk=obj.pk)
    made = refused = 0
    for current, target in itertools.product(_statuses(model), repeat=2):
        row.update(status=current, updated_at=LONG_AGO, **_fields_for(model, current))
        obj.refresh_from_db()
        also = _fields_for(model, target)
        for name, value in also.items():
            setattr(obj, name, value)

        if target in model.TRANSITIONS[current]:
            assert allowed(obj, target)
            previous = transition(obj, to=target, also=list(also))
            saved = row.get()
            assert (previous, saved.status, obj.status) == (current, target, target)
            assert saved.updated_at > LONG_AGO
            for name, value in also.items():
                assert getattr(saved, name) == value
            made += 1
        elif target != current:
            assert not allowed(obj, target)
            before = row.values().get()
            with pytest.raises(IllegalTransition) as error:
                transition(obj, to=target, also=list(also))
            assert f"is {current}; it cannot become {target}" in error.value.message
            assert obj.status == current
            assert row.values().get() == before
            refused += 1

    assert made == sum(len(targets) for targets in model.TRANSITIONS.values())
    assert made and refused


@pytest.mark.django_db
def test_a_move_collected_by_saves_is_written_at_its_flush():
    project = ProjectFactory(status=Project.Status.DRAFT)
    saves = Saves()

    previous = transition(project, to=Project.Status.ACTIVE, saves=saves)

    assert previous == Project.Status.DRAFT
    assert Project.objects.get(pk=project.pk).status == Project.Status.DRAFT
    assert saves.flush() == 1
    assert Project.objects.get(pk=project.pk).status == Project.Status.ACTIVE


# --- No status is assigned outside common/transitions.py ------------------------------------

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ["escrow", "payments", "accounts", "billing", "disputes", "portal", "realtime", "common"]
HELPER = "common/transitions.py"


# (file, text of the line) → why the status there is not one of a table's. Each entry must
# still match something (test_every_inbox_outbox_exception_is_still_used).
INBOX_OUTBOX = {
    ("payments/services/webhooks.py", "row.status = WebhookEvent.Status."): (
        "WebhookEvent is the incoming-webhook inbox: its status records how processing went "
        "(processed, ignored, failed, parked) and has no transition table"
    ),
    ("payments/services/webhook_replay.py", "row.status = WebhookEvent.Status."): (
        "an operator's replay of an inbox WebhookEvent marks it processed (inbox record)"
    ),
    ("payments/services/webhook_replay.py", ".update(status=WebhookEvent.Status.RECEIVED"): (
        "a replay puts an inbox WebhookEvent back to received, guarded by exclude(status__in="
        "APPLIED) in the same UPDATE (inbox record)"
    ),
    ("payments/services/webhook_batch.py", "status=WebhookEvent.Status.PROCESSED"): (
        "the batch path marks the inbox WebhookEvents it applied processed in one UPDATE "
        "(inbox record)"
    ),
    ("realtime/services/webhooks.py", "delivery.status = WebhookDelivery.Status."): (
        "WebhookDelivery is the outgoing-webhook outbox: pending/succeeded/failed records a "
        "delivery attempt and has no transition table"
    ),
}

_WRITERS = {"update", "update_or_create", "bulk_update", "update_rows"}


def _status_writes(tree: ast.AST):
    """(line, what) for every place the tree writes a `status` attribute or column."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for part in ast.walk(target):
                    if isinstance(part, ast.Attribute) and part.attr == "status":
                        yield part.lineno, "assigns .status"
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "setattr" and len(node.args) >= 2:
                field = node.args[1]
                if isinstance(field, ast.Constant) and field.value == "status":
                    yield node.lineno, 'setattr(..., "status", ...)'
            if name not in _WRITERS:
                continue
            for keyword in node.keywords:
                if keyword.arg == "status":
                    yield keyword.lineno, f".{name}(status=...)"
            # {"status": ...} in defaults/same/per_row/**kwargs, or "status" in bulk_update's
            # field list: only the call's own arguments, not the queryset chain before it.
            for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
                for part in ast.walk(argument):
                    keys = part.keys if isinstance(part, ast.Dict) else []
                    if isinstance(part, ast.List | ast.Tuple | ast.Set) and name == "bulk_update":
                        keys = part.elts
                    for key in keys:
                        if isinstance(key, ast.Constant) and key.value == "status":
                            yield key.lineno, f'.{name}(... "status" ...)'


def _scan() -> tuple[list[str], set]:
    """Findings not allowed (file:line: what | source) and the INBOX_OUTBOX entries used."""
    findings, used = [], set()
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if "migrations" in path.parts or relative == HELPER:
                continue
            source = path.read_text()
            lines = source.splitlines()
            for line, what in _status_writes(ast.parse(source, filename=relative)):
                text = lines[line - 1].strip()
                entry = next(
                    (key for key in INBOX_OUTBOX if key[0] == relative and key[1] in text), None
                )
                if entry is not None:
                    used.add(entry)
                else:
                    findings.append(f"{relative}:{line}: {what} | {text}")
    return findings, used


def test_no_status_is_assigned_outside_the_transition_helper():
    findings, _used = _scan()

    assert findings == [], (
        "change these statuses with common.transitions.transition(obj, to=..., also=[...]):\n"
        + "\n".join(findings)
    )


def test_every_inbox_outbox_exception_is_still_used():
    _findings, used = _scan()

    assert set(INBOX_OUTBOX) - used == set()


def test_the_scan_sees_a_status_assignment_and_a_status_update():
    tree = ast.parse(
        "payout.status = 'paid'\n"
        "Refund.objects.filter(pk=1).update(status='failed')\n"
        "update_rows(Payment, same={'status': 'completed'}, per_row={})\n"
        "Payout.objects.bulk_update(rows, ['status'])\n"
        "setattr(method, 'status', 'removed')\n"
        "Payout.objects.filter(status='paid').update(failure_code='')\n"
        "Payout.objects.create(status='pending')\n"
    )

    assert sorted(line for line, _what in _status_writes(tree)) == [1, 2, 3, 4, 5]


def test_the_helper_is_the_one_place_left():
    helper = ast.parse((ROOT / HELPER).read_text())

    assert [what for _line, what in _status_writes(helper)] == ["assigns .status"]
