"""Validation of uploaded FOCUS / Azure cost export files before they reach the inbox.

A file is checked completely (encoding, header, every row's date and cost) before anything is written;
a bad file produces a list of problems and loads nothing. A good file is written to the inbox
atomically (temp name + rename), so the inbox source never sees half a file. Thin stand-in until
backend.sources.files lands; the pipeline's own validation (silver quarantine) still applies after.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

FOCUS_REQUIRED = (
    "BilledCost", "BillingAccountId", "BillingCurrency", "BillingPeriodStart", "BillingPeriodEnd",
    "ChargeCategory", "ChargePeriodStart", "ChargePeriodEnd", "EffectiveCost", "ServiceName",
)  # fmt: skip
AZURE_REQUIRED_ANY_COST = ("Cost", "CostInBillingCurrency", "costInBillingCurrency")
AZURE_REQUIRED = ("Date", "MeterCategory", "BillingCurrency", "ResourceId")
MAX_ERRORS = 10


@dataclass
class UploadCheck:
    name: str
    kind: str = "unknown"  # focus / azure_export / unknown
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    first_day: str | None = None
    last_day: str | None = None
    sha256: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors and self.rows > 0


def _parse_date(text: str) -> datetime | None:
    text = text.strip()
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d", "%m/%d/%Y", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def validate(name: str, payload: bytes, *, max_bytes: int) -> UploadCheck:
    check = UploadCheck(name=name, sha256=hashlib.sha256(payload).hexdigest())
    if not name.lower().endswith(".csv"):
        check.errors.append("Only .csv files are accepted (FOCUS or Azure cost export CSV).")
        return check
    if len(payload) > max_bytes:
        check.errors.append(f"The file is larger than the {max_bytes // 2**20} MB limit (MAX_UPLOAD_MB).")
        return check
    try:
        text = payload.decode("utf-8-sig")  # Azure exports start with a BOM
    except UnicodeDecodeError as exc:
        check.errors.append(f"The file is not UTF-8 text (byte {exc.start}); export it again as CSV UTF-8.")
        return check
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        check.errors.append("The file is empty.")
        return check
    except csv.Error as exc:
        check.errors.append(f"The header is not valid CSV: {exc}.")
        return check
    cols = {h: i for i, h in enumerate(header)}
    if all(c in cols for c in FOCUS_REQUIRED):
        check.kind, date_col, cost_col = "focus", "ChargePeriodStart", "BilledCost"
    elif all(c in cols for c in AZURE_REQUIRED) and any(c in cols for c in AZURE_REQUIRED_ANY_COST):
        check.kind, date_col = "azure_export", "Date"
        cost_col = next(c for c in AZURE_REQUIRED_ANY_COST if c in cols)
    else:
        missing_focus = [c for c in FOCUS_REQUIRED if c not in cols]
        missing_azure = [c for c in AZURE_REQUIRED if c not in cols]
        check.errors.append(
            "This is neither a FOCUS file nor an Azure cost export. "
            f"FOCUS needs {', '.join(missing_focus)}; an Azure export needs {', '.join(missing_azure) or 'a Cost column'}."
        )
        return check
    days: list[datetime] = []
    try:
        for line_no, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            check.rows += 1
            if len(row) != len(header):
                check.errors.append(f"Line {line_no}: {len(row)} fields, the header has {len(header)}.")
            else:
                day = _parse_date(row[cols[date_col]])
                if day is None:
                    check.errors.append(f"Line {line_no}: {date_col} {row[cols[date_col]]!r} is not a date.")
                else:
                    days.append(day)
                try:
                    Decimal(row[cols[cost_col]].strip() or "0")
                except InvalidOperation:
                    check.errors.append(f"Line {line_no}: {cost_col} {row[cols[cost_col]]!r} is not a number.")
            if len(check.errors) >= MAX_ERRORS:
                check.errors.append("… stopped after the first errors; fix these and upload again.")
                break
    except csv.Error as exc:
        check.errors.append(f"The file is not valid CSV: {exc}.")
    if check.rows == 0 and not check.errors:
        check.errors.append("The file has a header but no rows.")
    if days:
        check.first_day, check.last_day = min(days).date().isoformat(), max(days).date().isoformat()
    return check


def save_to_inbox(inbox: Path, check: UploadCheck, payload: bytes) -> Path:
    """Write a validated file into the inbox; the same content twice is one file (named by its hash)."""
    if not check.ok:
        raise ValueError("refusing to save a file that failed validation")
    inbox.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in Path(check.name).name)
    target = inbox / f"{check.sha256[:12]}-{safe}"
    if target.exists():
        return target
    tmp = inbox / f".{target.name}.part"
    tmp.write_bytes(payload)
    os.replace(tmp, target)
    return target


def inbox_files(inbox: Path) -> list[Path]:
    if not inbox.exists():
        return []
    return sorted((p for p in inbox.rglob("*") if p.is_file() and not p.name.startswith(".")), key=lambda p: p.name)


def azure_credential_check(settings) -> tuple[bool, str]:
    """Acquire a client-credentials token for Cost Management (what the Azure source will do)."""
    if not settings.azure_configured:
        return False, (
            "Not configured: set AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET (and AZURE_SUBSCRIPTION_IDS) "
            "in .env or the environment, then restart. Until then Costlake runs on the demo estate."
        )
    import msal

    app = msal.ConfidentialClientApplication(
        settings.azure_client_id,
        authority=f"{settings.azure_authority_host.rstrip('/')}/{settings.azure_tenant_id}",
        client_credential=settings.azure_client_secret.get_secret_value(),
    )
    result = app.acquire_token_for_client(scopes=[f"{settings.azure_management_url.rstrip('/')}/.default"])
    if "access_token" in result:
        return True, f"Token acquired (expires in {result.get('expires_in', '?')} s)."
    return (
        False,
        f"{result.get('error', 'error')}: {result.get('error_description', '').splitlines()[0] if result.get('error_description') else 'no detail'}",
    )
