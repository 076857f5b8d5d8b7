"""After-commit hooks: how escrow asks for gateway work without importing payments.

payments registers its handlers in its AppConfig.ready():
    hooks.register("milestone.released", start_payout)   # fn(milestone_id: int) -> None
    hooks.register("milestone.refunded", start_refund)   # fn(milestone_id: int) -> None
Escrow calls `fire_on_commit(...)` inside its transaction; the handlers run only if it commits.
A crash between commit and the handler loses the call, so the handler's owner also sweeps for
released/refunded milestones with nothing started (see payments' beat tasks). Handlers must be
quick (enqueue a task) and idempotent. This is a registry of two names, not Django signals.
"""

import logging
from collections import defaultdict
from collections.abc import Callable

from django.db import transaction

logger = logging.getLogger(__name__)

HOOK_NAMES = frozenset({"milestone.released", "milestone.refunded"})
_handlers: dict[str, list[Callable[[int], None]]] = defaultdict(list)


def register(name: str, handler: Callable[[int], None]) -> None:
    if name not in HOOK_NAMES:
        raise ValueError(f"unknown hook {name!r}")
    if handler not in _handlers[name]:
        _handlers[name].append(handler)


def fire_on_commit(name: str, *, milestone_id: int) -> None:
    for handler in list(_handlers[name]):
        transaction.on_commit(lambda handler=handler: _run(name, handler, milestone_id))


def _run(name: str, handler: Callable[[int], None], milestone_id: int) -> None:
    try:
        handler(milestone_id)
    except Exception:
        # The change is committed; the owner's sweep picks the work up later.
        logger.exception("hook failed", extra={"hook": name, "milestone_id": milestone_id})
