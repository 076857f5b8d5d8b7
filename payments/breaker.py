"""A circuit breaker per gateway operation ("stripe:authorize"), shared by every process.

closed: calls go through; outcomes are counted in time buckets. When, over the last
PAYMENTS_BREAKER_WINDOW_SECONDS, at least PAYMENTS_BREAKER_MIN_CALLS calls were made and the
share of transient failures (network, timeout, 429, 5xx; never declines) reaches
PAYMENTS_BREAKER_ERROR_RATE, it opens.
open: no call is sent until PAYMENTS_BREAKER_COOLDOWN_SECONDS have passed; callers queue the
work with a next attempt time instead of failing it.
half_open: one probe call at a time goes through; success closes it, failure opens it again.

Where the state lives: Redis when REDIS_URL is set (a hash per breaker, counters per bucket, a
compare-and-set script for transitions, SET NX for the probe permit); otherwise the
CircuitBreaker and CircuitBreakerWindow tables (compare-and-set UPDATEs). Whoever wins a
transition emits `circuit_breaker.opened|half_open|closed` (to operators, on their WebSocket
channel `ops.circuit_breakers`; opening and closing also notify them in-app) and mirrors the
state into the CircuitBreaker row the admin shows, so each transition is announced once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum

from payments.models import CircuitBreaker, CircuitBreakerWindow

logger = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
EVENT_NAMES = {OPEN: "opened", HALF_OPEN: "half_open", CLOSED: "closed"}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    state: str
    retry_at: float | None = None  # unix seconds, when not allowed


def _conf(name: str):
    return getattr(settings, f"PAYMENTS_BREAKER_{name}")


def _bucket_seconds() -> int:
    return max(1, int(_conf("BUCKET_SECONDS")))


def _buckets(now: float) -> list[int]:
    size = _bucket_seconds()
    newest = int(now // size)
    count = max(1, int(_conf("WINDOW_SECONDS")) // size)
    return list(range(newest - count + 1, newest + 1))


class _DatabaseStore:
    def get(self, name: str) -> dict:
        row = CircuitBreaker.objects.filter(name=name).values("state", "retry_at").first()
        if row is None:
            return {"state": CLOSED, "retry_at": None}
        retry_at = row["retry_at"].timestamp() if row["retry_at"] else None
        return {"state": row["state"], "retry_at": retry_at}

    def count(self, name: str, *, success: bool, now: float) -> tuple[int, int]:
        bucket = _buckets(now)[-1]
        field = "successes" if success else "failures"
        rows = CircuitBreakerWindow.objects.filter(name=name, bucket=bucket)
        if not rows.update(**{field: F(field) + 1}):
            try:
                with transaction.atomic():
                    CircuitBreakerWindow.objects.create(name=name, bucket=bucket, **{field: 1})
            except IntegrityError:
                rows.update(**{field: F(field) + 1})
        return self.totals(name, now=now)

    def totals(self, name: str, *, now: float) -> tuple[int, int]:
        sums = CircuitBreakerWindow.objects.filter(
            name=name, bucket__gte=_buckets(now)[0]
        ).aggregate(ok=Sum("successes"), err=Sum("failures"))
        return sums["ok"] or 0, sums["err"] or 0

    def clear_window(self, name: str) -> None:
        CircuitBreakerWindow.objects.filter(name=name).delete()

    def swap(self, name: str, *, expected: str, new: str, retry_at: float | None) -> bool:
        CircuitBreaker.objects.get_or_create(name=name)
        return bool(
            CircuitBreaker.objects.filter(name=name, state=expected).update(
                state=new,
                retry_at=_dt(retry_at),
                opened_at=_dt(time.time()) if new == OPEN else F("opened_at"),
                probe_started_at=None,
            )
        )

    def take_probe(self, name: str, *, now: float) -> bool:
        stale = _dt(now - float(_conf("PROBE_TIMEOUT_SECONDS")))
        free = Q(probe_started_at__isnull=True) | Q(probe_started_at__lt=stale)
        claimed = CircuitBreaker.objects.filter(free, name=name, state=HALF_OPEN).update(
            probe_started_at=_dt(now)
        )
        return bool(claimed)


class _RedisStore:
    _SWAP = """
    local current = redis.call('HGET', KEYS[1], 'state') or 'closed'
    if current ~= ARGV[1] then return 0 end
    redis.call('HSET', KEYS[1], 'state', ARGV[2], 'retry_at', ARGV[3])
    redis.call('DEL', KEYS[2])
    return 1
    """

    def __init__(self, url: str):
        import redis

        self.redis = redis.Redis.from_url(url)
        self.swap_script = self.redis.register_script(self._SWAP)

    @staticmethod
    def _key(name: str) -> str:
        return f"escrowpay:breaker:{name}"

    def get(self, name: str) -> dict:
        state, retry_at = self.redis.hmget(self._key(name), "state", "retry_at")
        return {
            "state": state.decode() if state else CLOSED,
            "retry_at": float(retry_at) if retry_at else None,
        }

    def count(self, name: str, *, success: bool, now: float) -> tuple[int, int]:
        bucket = _buckets(now)[-1]
        key = f"{self._key(name)}:{bucket}:{'ok' if success else 'err'}"
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, int(_conf("WINDOW_SECONDS")) * 2 + _bucket_seconds())
        pipe.execute()
        return self.totals(name, now=now)

    def totals(self, name: str, *, now: float) -> tuple[int, int]:
        keys = []
        for bucket in _buckets(now):
            keys += [f"{self._key(name)}:{bucket}:ok", f"{self._key(name)}:{bucket}:err"]
        values = [int(v or 0) for v in self.redis.mget(keys)]
        return sum(values[0::2]), sum(values[1::2])

    def clear_window(self, name: str) -> None:
        keys = list(self.redis.scan_iter(f"{self._key(name)}:*"))
        if keys:
            self.redis.delete(*keys)

    def swap(self, name: str, *, expected: str, new: str, retry_at: float | None) -> bool:
        probe = f"{self._key(name)}:probe"
        return bool(
            self.swap_script(keys=[self._key(name), probe], args=[expected, new, retry_at or ""])
        )

    def take_probe(self, name: str, *, now: float) -> bool:
        probe = f"{self._key(name)}:probe"
        return bool(self.redis.set(probe, "1", nx=True, ex=int(_conf("PROBE_TIMEOUT_SECONDS"))))


_stores: dict[str, object] = {}


def store():
    url = settings.REDIS_URL if _conf("BACKEND") in ("auto", "redis") else ""
    key = url or "database"
    if key not in _stores:
        _stores[key] = _RedisStore(url) if url else _DatabaseStore()
    return _stores[key]


def _dt(timestamp: float | None):
    return datetime.fromtimestamp(timestamp, tz=UTC) if timestamp else None


def allow(name: str) -> Decision:
    """May a call for this operation go out now? Moves open → half_open after the cool-down
    and hands out the single probe permit."""
    backend = store()
    now = time.time()
    current = backend.get(name)
    if current["state"] == CLOSED:
        return Decision(True, CLOSED)
    if current["state"] == OPEN:
        retry_at = current["retry_at"] or now
        if now < retry_at:
            return Decision(False, OPEN, retry_at)
        if backend.swap(name, expected=OPEN, new=HALF_OPEN, retry_at=None):
            _announce(name, HALF_OPEN, backend)
    if backend.take_probe(name, now=now):
        return Decision(True, HALF_OPEN)
    return Decision(False, HALF_OPEN, now + float(_conf("PROBE_TIMEOUT_SECONDS")))


def record(name: str, *, success: bool) -> None:
    """Count one call's outcome (declines count as successes: the gateway answered)."""
    backend = store()
    now = time.time()
    state = backend.get(name)["state"]
    if state == HALF_OPEN:
        if success:
            if backend.swap(name, expected=HALF_OPEN, new=CLOSED, retry_at=None):
                backend.clear_window(name)
                _announce(name, CLOSED, backend)
        else:
            retry_at = now + float(_conf("COOLDOWN_SECONDS"))
            if backend.swap(name, expected=HALF_OPEN, new=OPEN, retry_at=retry_at):
                _announce(name, OPEN, backend, retry_at=retry_at)
        return
    successes, failures = backend.count(name, success=success, now=now)
    total = successes + failures
    if success or state != CLOSED or total < int(_conf("MIN_CALLS")):
        return
    rate = failures / total
    if rate >= float(_conf("ERROR_RATE")):
        retry_at = now + float(_conf("COOLDOWN_SECONDS"))
        if backend.swap(name, expected=CLOSED, new=OPEN, retry_at=retry_at):
            _announce(name, OPEN, backend, retry_at=retry_at, error_rate=rate)


def reset(name: str) -> None:
    """Close a breaker by hand (admin action)."""
    backend = store()
    for state in (OPEN, HALF_OPEN):
        if backend.swap(name, expected=state, new=CLOSED, retry_at=None):
            backend.clear_window(name)
            _announce(name, CLOSED, backend)
            return


def status(name: str) -> dict:
    backend = store()
    now = time.time()
    current = backend.get(name)
    successes, failures = backend.totals(name, now=now)
    total = successes + failures
    return {
        "name": name,
        "state": current["state"],
        "retry_at": _dt(current["retry_at"]),
        "calls": total,
        "error_rate": failures / total if total else 0.0,
    }


def _announce(name: str, state: str, backend, *, retry_at=None, error_rate=None) -> None:
    from accounts.models import User
    from realtime.events import OPS_CIRCUIT_BREAKERS, emit

    logger.warning("circuit breaker %s", state, extra={"breaker": name, "state": state})
    with transaction.atomic():
        fields = {"state": state, "retry_at": _dt(retry_at), "probe_started_at": None}
        if state == OPEN:
            fields["opened_at"] = _dt(time.time())
        if error_rate is not None:
            fields["last_error_rate"] = error_rate
        if isinstance(backend, _RedisStore):
            CircuitBreaker.objects.update_or_create(name=name, defaults=fields)
        elif error_rate is not None:
            CircuitBreaker.objects.filter(name=name).update(last_error_rate=error_rate)
        operators = User.objects.filter(role=User.Role.OPERATOR).values_list("pk", flat=True)
        emit(
            f"circuit_breaker.{EVENT_NAMES[state]}",
            {
                "name": name,
                "state": state,
                "retry_at": _dt(retry_at).isoformat() if retry_at else None,
                "error_rate": error_rate,
            },
            aggregate=("circuit_breaker", name),
            audience=list(operators),
            channels=[OPS_CIRCUIT_BREAKERS],
        )
