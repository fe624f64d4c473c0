"""Structured JSON logs, one object per line, carrying ``ticket_id`` where there is one.

Ticket text is only logged when LOG_TICKET_TEXT=true. Secrets are never passed to a logger;
as a second line of defence anything shaped like an Anthropic key is masked on the way out.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

SECRET_PATTERN = re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}")
STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    return SECRET_PATTERN.sub("sk-ant-***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(entry, default=str).decode())


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every coordinator step at INFO, and the SDK's HTTP client (httpx2) every request
    # ("HTTP Request: POST …"), one more line per Claude call; keep their warnings only.
    for noisy in ("aiokafka", "httpx2", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
