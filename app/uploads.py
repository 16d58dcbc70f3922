"""Uploads for the Sources page: checked by backend.sources.files, then placed in the inbox atomically.

A file is checked in full (`prepare_file`: size, gzip, format detection, every row's day and amount) in a
private temporary folder first, so a refused file never reaches the inbox. A good file is written into
settings.inbox_dir under a hidden temporary name and renamed, so the pipeline's inbox scan (which skips
hidden files) never sees half a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from backend.auth import Principal, Role, require
from backend.config import Settings
from backend.mart.audit import record_now
from backend.sources import fx
from backend.sources.azure.source import CONFIGURED, azure_config
from backend.sources.files import FileRefusedError, PreparedFile, prepare_file

log = logging.getLogger(__name__)

__all__ = ["FileRefusedError", "SavedUpload", "azure_credential_check", "inbox_files", "save_upload"]
ACCEPTED_TYPES = ["csv", "gz", "parquet"]


@dataclass(frozen=True)
class SavedUpload:
    """What the page tells the user about an accepted file."""

    name: str
    path: Path
    format: str
    metric: str
    rows: int
    total: str
    first_day: str | None
    last_day: str | None
    notes: tuple[str, ...]
    already_there: bool


def _safe_name(name: str) -> str:
    base = Path(name).name.lstrip(".") or "upload.csv"
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in base)


def _summary(prepared: PreparedFile, name: str, path: Path, *, already_there: bool) -> SavedUpload:
    days = sorted(day for _scope, day, _currency in prepared.totals if day is not None)
    return SavedUpload(
        name=name,
        path=path,
        format=prepared.report()["format"],  # "FOCUS 1.2", "Azure cost export (EA)"
        metric=prepared.metric,
        rows=prepared.row_count,
        total=f"{prepared.total_cost:,.2f}",
        first_day=days[0].isoformat() if days else None,
        last_day=days[-1].isoformat() if days else None,
        notes=tuple(prepared.notes),
        already_there=already_there,
    )


def save_upload(name: str, payload: bytes, settings: Settings, *, actor: Principal, owner: sa.Engine) -> SavedUpload:
    """Check an uploaded file and place it in the inbox; raises FileRefusedError (nothing written) if refused.

    Needs the editor role (PermissionDenied before anything is read); an accepted file is audited with the
    actor through `owner`. The inbox name keeps the original name (format and metric detection read it)
    behind a content-hash prefix, so the same file uploaded twice is one inbox file."""
    require(actor, Role.editor, "Uploading files")
    saved = _save_upload(name, payload, settings)
    detail = {"format": saved.format, "metric": saved.metric, "rows": saved.rows, "bytes": len(payload)}
    record_now(owner, actor, "upload", saved.path.name, {**detail, "already_there": saved.already_there})
    return saved


def _save_upload(name: str, payload: bytes, settings: Settings) -> SavedUpload:
    safe = _safe_name(name)
    if len(payload) > settings.max_upload_mb * 2**20:
        # Refused before it is even written to a temporary file.
        raise FileRefusedError(
            f"{safe} is {len(payload) / 2**20:,.1f} MB, over the import limit of {settings.max_upload_mb} MB "
            "(MAX_UPLOAD_MB); split the export by month or raise the limit"
        )
    with tempfile.TemporaryDirectory(prefix="costlake-upload-") as tmp:
        staged = Path(tmp) / safe
        staged.write_bytes(payload)
        if fx.is_rates_file(staged):
            # An FX rates file: checked here the same way (RatesRefusedError names the row), imported by the run.
            return _save_rates(fx.parse_rates(staged, settings), safe, payload, settings)
        prepared = prepare_file(staged, settings)  # FileRefusedError: the temporary folder goes, nothing else
    inbox = settings.inbox_dir
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / f"{prepared.sha256[:12]}-{safe}"
    if target.exists():
        log.info("upload %s: identical content already waiting in the inbox as %s", name, target.name)
        return _summary(prepared, name, target, already_there=True)
    part = inbox / f".{target.name}.{os.getpid()}.part"
    try:
        with part.open("wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    log.info("upload %s saved to the inbox as %s (%d rows, %s)", name, target.name, prepared.row_count, prepared.metric)
    return _summary(prepared, name, target, already_there=False)


def _save_rates(rates: fx.RatesFile, name: str, payload: bytes, settings: Settings) -> SavedUpload:
    digest = hashlib.sha256(payload).hexdigest()[:12]
    inbox = settings.inbox_dir
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / f"{digest}-{name}"
    already = target.exists()
    if not already:
        part = inbox / f".{target.name}.{os.getpid()}.part"
        try:
            part.write_bytes(payload)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
    days = sorted(r.rate_date for r in rates.rates)
    return SavedUpload(
        name=name,
        path=target,
        format="FX rates",
        metric="rates",
        rows=len(rates.rates),
        total="-",
        first_day=days[0].isoformat() if days else None,
        last_day=days[-1].isoformat() if days else None,
        notes=(f"{len(rates.rates)} month-end rates; the next run converts with them",),
        already_there=already,
    )


def inbox_files(inbox: Path) -> dict[str, list[Path]]:
    """Files waiting in the inbox, and those the pipeline imported (processed/) or refused (rejected/)."""

    def files(folder: Path) -> list[Path]:
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))

    return {
        "waiting": files(inbox),
        "processed": files(inbox / "processed"),
        "rejected": [p for p in files(inbox / "rejected") if not p.name.endswith(".error.txt")],
    }


def azure_credential_check(settings: Settings, *, actor: Principal) -> tuple[bool, str]:
    """Acquire a client-credentials token for Cost Management (what the Azure source will do); admins only,
    as it uses the source's credentials."""
    require(actor, Role.admin, "Checking the Azure credentials")
    config = azure_config(settings)
    if set(config.missing) - {"AZURE_SUBSCRIPTION_IDS"}:
        # No token can be asked for without all three credentials; say which setting is missing.
        return (
            False,
            f"Azure is {config.message}. Settings are read from .env or the environment at start: restart after.",
        )
    import msal

    app = msal.ConfidentialClientApplication(
        settings.azure_client_id,
        authority=f"{settings.azure_authority_host.rstrip('/')}/{settings.azure_tenant_id}",
        client_credential=settings.azure_client_secret.get_secret_value(),
    )
    result = app.acquire_token_for_client(scopes=[f"{settings.azure_management_url.rstrip('/')}/.default"])
    if "access_token" in result:
        if config.state != CONFIGURED:
            # The credentials work, but runs still fail until the subscriptions to read are named.
            return False, f"Token acquired, but the Azure source is {config.message}."
        return True, f"Token acquired (expires in {result.get('expires_in', '?')} s); {config.message}."
    description = (result.get("error_description") or "no detail").splitlines()[0]
    return False, f"{result.get('error', 'error')}: {description}"
