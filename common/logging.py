"""Structured logs: one JSON object per line, with secrets and card data masked."""

import json
import logging
import re
from datetime import UTC, datetime

_SECRET_PATTERNS = [
    # API keys of ours and Stripe's, webhook secrets, bearer tokens, card numbers.
    (re.compile(r"\b(esk|sk|rk|pk|whsec)_(live_|test_)?[A-Za-z0-9_]{6,}"), r"\1_[redacted]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]+"), r"\1[redacted]"),
    (
        re.compile(
            r"(?i)(password|secret|token|api_key|authorization)(['\"]?\s*[:=]\s*['\"]?)"
            r"[^\s'\",}]+"
        ),
        r"\1\2[redacted]",
    ),
    (re.compile(r"\b(?:\d[ -]?){13,19}\b"), "[card-redacted]"),
]

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)
