"""Settings in both modes: the embedded default with nothing set, the real services with
DATABASE_URL/REDIS_URL. Each is loaded in a fresh interpreter so the environment is exact."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import json, django; from django.conf import settings as s; django.setup();"
    "print(json.dumps({'db': s.DATABASES['default']['ENGINE'],"
    "'pool': s.DATABASES['default'].get('OPTIONS', {}).get('pool'),"
    "'layer': s.CHANNEL_LAYERS['default']['BACKEND'],"
    "'layer_hosts': s.CHANNEL_LAYERS['default'].get('CONFIG', {}).get('hosts'),"
    "'cache': s.CACHES['default']['BACKEND'], 'eager': s.CELERY_TASK_ALWAYS_EAGER,"
    "'broker': s.CELERY_BROKER_URL, 'gateway': s.PAYMENT_GATEWAY, 'debug': s.DEBUG,"
    "'hosts': s.ALLOWED_HOSTS, 'fee': s.PLATFORM_FEE_PERCENT,"
    "'review_window_seconds': s.MILESTONE_REVIEW_WINDOW.total_seconds(),"
    "'transport': getattr(s, 'CELERY_BROKER_TRANSPORT', None),"
    "'broker_folder': s.CELERY_BROKER_TRANSPORT_OPTIONS.get('data_folder_in')}))"
)
VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_TASK_ALWAYS_EAGER",
    "CELERY_BROKER_URL",
    "RUN_DIR",
    "DEBUG",
    "ALLOWED_HOSTS",
)


def load(**overrides) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in VARIABLES}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", **overrides)
    output = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def test_nothing_set_gives_the_embedded_default():
    settings = load()

    assert settings["db"] == "django.db.backends.sqlite3"
    assert settings["layer"] == "channels.layers.InMemoryChannelLayer"
    assert settings["cache"].endswith("LocMemCache")
    assert settings["eager"] is True and settings["broker"] == "memory://"
    assert settings["gateway"] == "sandbox"
    assert settings["hosts"] == ["localhost", "127.0.0.1"]
    assert settings["fee"] == "5"


def test_database_and_redis_urls_switch_to_the_real_services():
    settings = load(
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/x", REDIS_URL="redis://127.0.0.1:6379/3"
    )

    assert settings["db"] == "django.db.backends.postgresql"
    assert settings["pool"]["max_size"] >= 10
    assert settings["layer"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert settings["layer_hosts"][0]["address"] == "redis://127.0.0.1:6379/3"
    assert settings["layer_hosts"][0]["max_connections"] >= 1000
    assert settings["cache"] == "django.core.cache.backends.redis.RedisCache"
    assert settings["broker"] == "redis://127.0.0.1:6379/3"
    assert settings["eager"] is False


def test_the_review_window_accepts_fractions_of_a_day():
    """MILESTONE_REVIEW_WINDOW_DAYS=0.001 is 86.4 seconds (CONTRACT.md); whole days still work."""
    assert load(MILESTONE_REVIEW_WINDOW_DAYS="0.001")["review_window_seconds"] == 86.4
    assert load(MILESTONE_REVIEW_WINDOW_DAYS="2")["review_window_seconds"] == 2 * 86400
    assert load()["review_window_seconds"] == 14 * 86400


def test_the_make_run_broker_hands_tasks_to_the_worker(tmp_path):
    """What config/serve.py gives its children without Redis: kombu's filesystem transport
    (with config.broker's atomic writes) in RUN_DIR, and tasks are no longer run inline."""
    settings = load(CELERY_BROKER_URL="filesystem://localhost/", RUN_DIR=str(tmp_path))

    assert settings["broker"] == "filesystem://localhost/"
    assert settings["transport"] == "config.broker:Transport"
    assert settings["broker_folder"] == str(tmp_path / "broker" / "messages")
    assert settings["eager"] is False


def test_eager_can_be_forced_with_redis():
    settings = load(REDIS_URL="redis://127.0.0.1:6379/3", CELERY_TASK_ALWAYS_EAGER="true")

    assert settings["eager"] is True


def test_production_settings_pass_check_deploy():
    env = {key: value for key, value in os.environ.items() if key not in VARIABLES}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="false",
        SECRET_KEY="a-long-random-production-secret-" + "x7Gq2" * 10,
        SECURE_SSL_REDIRECT="true",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="true",
        SECURE_HSTS_PRELOAD="true",
        ALLOWED_HOSTS="payments.example.com",
        EMAIL_URL="smtp+tls://mailer:secret@mail.example.com:587",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert json.dumps({}) == "{}"


def _check_deploy(**overrides) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in VARIABLES}
    env.pop("EMAIL_URL", None)
    env.update(DJANGO_SETTINGS_MODULE="config.settings", **overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--tag", "email"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def test_check_deploy_warns_when_production_has_no_email_backend():
    """DEBUG off and no EMAIL_URL: escrowpay.W005; with EMAIL_URL, or in DEBUG (the console),
    no warning."""
    assert "escrowpay.W005" in _check_deploy(DEBUG="false").stderr
    configured = _check_deploy(DEBUG="false", EMAIL_URL="smtp+tls://u:p@mail.example.com:587")
    assert "escrowpay.W005" not in configured.stdout + configured.stderr
    assert "escrowpay.W005" not in _check_deploy(DEBUG="true").stderr


def test_email_url_configures_the_backend():
    """EMAIL_URL is parsed by django-environ: smtp+tls gives SMTP with STARTTLS and the
    credentials; consolemail the console; nothing set in production mode delivers nowhere."""
    probe = (
        "import json, django; from django.conf import settings as s; django.setup();"
        "print(json.dumps([s.EMAIL_BACKEND, s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_HOST_USER,"
        " s.EMAIL_USE_TLS, s.EMAIL_TIMEOUT, s.EMAIL_DELIVERY_CONFIGURED]))"
    )

    def load_email(**overrides):
        env = {key: value for key, value in os.environ.items() if key not in VARIABLES}
        env.pop("EMAIL_URL", None)
        env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="false", **overrides)
        output = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
        )
        return json.loads(output.stdout.strip().splitlines()[-1])

    assert load_email(EMAIL_URL="smtp+tls://mailer:pw@mail.example.com:587") == [
        "django.core.mail.backends.smtp.EmailBackend",
        "mail.example.com",
        587,
        "mailer",
        True,
        10,
        True,
    ]
    assert load_email(EMAIL_URL="consolemail://")[0].endswith("console.EmailBackend")
    assert load_email()[0].endswith("locmem.EmailBackend")
    assert load_email()[-1] is False
