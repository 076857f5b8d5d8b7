"""The domain's settings: escrow's fees and ledger, payments (gateways, retries, webhooks in,
the breaker), realtime (events, WebSockets, webhooks out). Imported into config/settings.py,
which is the settings module; each setting's reason is beside it."""

from datetime import timedelta

from config.environment import DEBUG, SITE_URL, env

PAYMENT_GATEWAY = env.str("PAYMENT_GATEWAY", default="sandbox")
PLATFORM_FEE_PERCENT = env.str("PLATFORM_FEE_PERCENT", default="5")
# The fee policy a release's fee comes from (escrow/fees.py): a dotted path to a callable
# (milestone, release_amount) -> fee in minor units; billing may name its own.
ESCROW_FEE_POLICY = env.str("ESCROW_FEE_POLICY", default="escrow.fees.platform_fee_policy")
# Balance rows per shared ledger account (gateway, revenue, expense): postings pick one at
# random so parallel transactions do not serialise on one row lock (escrow.models).
LEDGER_BALANCE_SLOTS = env.int("LEDGER_BALANCE_SLOTS", default=16)
# Homeowners are reminded this many days before an unfunded milestone's due date (and once
# when it has passed).
PAYMENT_DUE_REMINDER_DAYS = env.int("PAYMENT_DUE_REMINDER_DAYS", default=3)
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
# The portal's payment-methods page uses Stripe Elements when this is set (and the gateway is
# stripe); the CSP then allows js.stripe.com.
STRIPE_PUBLISHABLE_KEY = env.str("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
SANDBOX_WEBHOOK_SECRET = env.str("SANDBOX_WEBHOOK_SECRET", default="whsec_sandbox_development")
# --- Payments (payments/; see the module docstrings there) ---
# Secrets still accepted while one is rotated (comma-separated).
STRIPE_WEBHOOK_SECRETS_PREVIOUS = env.list("STRIPE_WEBHOOK_SECRETS_PREVIOUS", default=[])
SANDBOX_WEBHOOK_SECRETS_PREVIOUS = env.list("SANDBOX_WEBHOOK_SECRETS_PREVIOUS", default=[])
SANDBOX_WEBHOOK_DELIVERY = env.str("SANDBOX_WEBHOOK_DELIVERY", default="auto")
SANDBOX_WEBHOOK_DELAY = env.float("SANDBOX_WEBHOOK_DELAY", default=1.0)
# pm_card_authenticationRequired on the sandbox: "challenge" waits, like Stripe, for the card
# holder to pass or fail the sandbox's 3-D Secure page (/sandbox/3ds/<intent>/); "auto" lets a
# simulated card holder pass it SANDBOX_WEBHOOK_DELAY seconds later (the test suite's default).
SANDBOX_AUTHENTICATION = env.str("SANDBOX_AUTHENTICATION", default="challenge")
PAYMENTS_CAPTURE_METHOD = env.str("PAYMENTS_CAPTURE_METHOD", default="manual")
# Funding payments above this go to the "high" queue. The amount is in the minor units of a
# two-decimal currency (10,000.00) and is scaled by each currency's exponent (jpy: 10,000;
# kwd: 10,000.000); PAYMENTS_HIGH_PRIORITY_AMOUNTS ("jpy=1500000,krw=14000000", in that
# currency's own minor units) overrides it per currency. payments.services.funding reads both.
PAYMENTS_HIGH_PRIORITY_AMOUNT = env.int("PAYMENTS_HIGH_PRIORITY_AMOUNT", default=1_000_000)
PAYMENTS_HIGH_PRIORITY_AMOUNTS = {
    currency.strip().lower(): int(amount)
    for currency, amount in env.dict("PAYMENTS_HIGH_PRIORITY_AMOUNTS", default={}).items()
}
# A 3-D Secure challenge the card holder has not finished after this long is given up: the
# intent is cancelled at the gateway, the payment becomes cancelled and the milestone pending
# (payments.work_due, every 10 s).
PAYMENTS_VERIFICATION_TIMEOUT_SECONDS = env.float(
    "PAYMENTS_VERIFICATION_TIMEOUT_SECONDS", default=30 * 60
)
PAYMENTS_GATEWAY_TIMEOUT_SECONDS = env.float("PAYMENTS_GATEWAY_TIMEOUT_SECONDS", default=20.0)
PAYMENTS_WEBHOOK_MAX_BYTES = env.int("PAYMENTS_WEBHOOK_MAX_BYTES", default=64 * 1024)
PAYMENTS_RETRY_BASE_SECONDS = env.float("PAYMENTS_RETRY_BASE_SECONDS", default=2.0)
PAYMENTS_RETRY_MAX_DELAY_SECONDS = env.float("PAYMENTS_RETRY_MAX_DELAY_SECONDS", default=3600.0)
PAYMENTS_RETRY_MAX_ATTEMPTS = env.int("PAYMENTS_RETRY_MAX_ATTEMPTS", default=8)
# Shorter delays ride a Celery countdown; longer ones wait in the database for beat.
PAYMENTS_RETRY_COUNTDOWN_MAX_SECONDS = env.float("PAYMENTS_RETRY_COUNTDOWN_MAX_SECONDS", default=30)
# Celery eager only (no worker, no beat: manage.py commands, tests): short retries run from a
# timer thread.
PAYMENTS_RETRY_TIMERS = env.bool("PAYMENTS_RETRY_TIMERS", default=True)
PAYMENTS_WEBHOOK_MAX_ATTEMPTS = env.int("PAYMENTS_WEBHOOK_MAX_ATTEMPTS", default=10)
# With a broker: "batched" publishes one task per few milliseconds of accepted webhooks from
# a sender thread (payments/enqueue.py); "inline" one task per webhook before the response.
PAYMENTS_WEBHOOK_ENQUEUE = env.str("PAYMENTS_WEBHOOK_ENQUEUE", default="batched")
PAYMENTS_WEBHOOK_BATCH_WINDOW = env.float("PAYMENTS_WEBHOOK_BATCH_WINDOW", default=0.005)
# A worker applies a batch's plain payment successes in one transaction
# (payments/services/webhook_batch.py); false: every event in its own transaction.
PAYMENTS_WEBHOOK_BATCH_APPLY = env.bool("PAYMENTS_WEBHOOK_BATCH_APPLY", default=True)
# At most this many events in one such transaction (a task's own plus others waiting).
PAYMENTS_WEBHOOK_BATCH_MAX = env.int("PAYMENTS_WEBHOOK_BATCH_MAX", default=100)
# Rows another worker's transaction holds are tried again this much later, as a new task.
PAYMENTS_WEBHOOK_BUSY_RETRY_SECONDS = env.float("PAYMENTS_WEBHOOK_BUSY_RETRY_SECONDS", default=1.0)
PAYMENTS_BREAKER_BACKEND = env.str("PAYMENTS_BREAKER_BACKEND", default="auto")
PAYMENTS_BREAKER_WINDOW_SECONDS = env.int("PAYMENTS_BREAKER_WINDOW_SECONDS", default=60)
PAYMENTS_BREAKER_BUCKET_SECONDS = env.int("PAYMENTS_BREAKER_BUCKET_SECONDS", default=10)
PAYMENTS_BREAKER_MIN_CALLS = env.int("PAYMENTS_BREAKER_MIN_CALLS", default=10)
PAYMENTS_BREAKER_ERROR_RATE = env.float("PAYMENTS_BREAKER_ERROR_RATE", default=0.5)
PAYMENTS_BREAKER_COOLDOWN_SECONDS = env.float("PAYMENTS_BREAKER_COOLDOWN_SECONDS", default=30.0)
PAYMENTS_BREAKER_PROBE_TIMEOUT_SECONDS = env.int(
    "PAYMENTS_BREAKER_PROBE_TIMEOUT_SECONDS", default=30
)
PAYMENTS_RECONCILE_LOOKBACK = timedelta(days=env.int("PAYMENTS_RECONCILE_LOOKBACK_DAYS", default=3))
# Days, fractions allowed (0.001 is 86.4 s); beat's escrow-auto-release acts within 15 s of it.
MILESTONE_REVIEW_WINDOW = timedelta(days=env.float("MILESTONE_REVIEW_WINDOW_DAYS", default=14.0))

# --- Realtime (realtime/; see docs/PERFORMANCE.md "Realtime") ---
REALTIME_HEARTBEAT_SECONDS = env.float("REALTIME_HEARTBEAT_SECONDS", default=25.0)
REALTIME_AUTH_RECHECK_SECONDS = env.float("REALTIME_AUTH_RECHECK_SECONDS", default=300.0)
# Per connection: messages waiting to be written, and bytes the server may hold unsent for a
# client that does not read; past both the connection is closed with 4008 (it resumes).
REALTIME_SEND_QUEUE_SIZE = env.int("REALTIME_SEND_QUEUE_SIZE", default=1000)
REALTIME_SEND_BUFFER_BYTES = env.int("REALTIME_SEND_BUFFER_BYTES", default=256 * 1024)
REALTIME_DEDUPE_WINDOW = env.int("REALTIME_DEDUPE_WINDOW", default=10_000)
# Embedded mode only (in-memory layer): how often each server process reads new events from
# the store so that several `make serve` processes reach each other's clients (0: off).
REALTIME_TAIL_SECONDS = env.float("REALTIME_TAIL_SECONDS", default=0.25)
# gc.set_threshold for server processes (realtime/gc_tuning.py); empty: CPython's defaults.
REALTIME_GC_THRESHOLDS = tuple(
    env.list("REALTIME_GC_THRESHOLDS", cast=int, default=[50_000, 50, 100])
)
REALTIME_PUBLISH_TIMEOUT_SECONDS = env.float("REALTIME_PUBLISH_TIMEOUT_SECONDS", default=5.0)
# With a broker, sequenced events are handed to the dispatch task (notifications, outgoing
# webhooks) in one task per this many seconds per process; 0 publishes one task per batch.
REALTIME_DISPATCH_BATCH_WINDOW = env.float("REALTIME_DISPATCH_BATCH_WINDOW", default=0.005)
REALTIME_PRESENCE_PREFIX = env.str("CHANNEL_LAYER_PREFIX", default="escrowpay")
# Resume (WebSocket last_event_id, GET /api/v1/events?after=) works this far back.
REALTIME_REPLAY_RETENTION = timedelta(days=env.int("REALTIME_REPLAY_RETENTION_DAYS", default=30))
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default=SITE_URL or "http://127.0.0.1:8000")
# Outgoing webhooks to loopback/private addresses: refused in production (SSRF), allowed in
# the DEBUG development mode so a local receiver works with `make run`.
WEBHOOK_ALLOW_PRIVATE_TARGETS = env.bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", default=DEBUG)
WEBHOOK_TIMEOUT_SECONDS = env.int("WEBHOOK_TIMEOUT_SECONDS", default=10)
# Waits after failed attempt 1, 2, ...: 8 attempts over about 27 hours.
WEBHOOK_RETRY_DELAYS_SECONDS = [5, 300, 1800, 7200, 18000, 36000, 36000]
WEBHOOK_REQUEUE_AFTER = timedelta(minutes=5)
WEBHOOK_SECRET_ROTATION_OVERLAP = timedelta(hours=24)
