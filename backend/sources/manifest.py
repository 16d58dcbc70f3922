"""Azure export deliveries: a folder with `manifest.json` (run info, blob list, row counts) and its part files.

Cost Management writes each export run as `<export>/<date range>/<run id>/part_*.csv.gz|.parquet` plus a
manifest, written last. The manifest says which dataset it is (FocusCost, ActualCost, AmortizedCost),
the run's id and period, and every part with its row count: the parts of one run are one delivery, and
an import that does not find every listed part, or finds other row counts, is refused before anything
is sent (the export is still being written, or a part was lost on the way).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
COST_SUFFIXES = (".csv", ".csv.gz", ".gz", ".parquet", ".snappy.parquet")
# Export datasets that are cost rows, and the metric their rows carry (None: FOCUS carries both).
COST_DATASETS = {"focuscost": None, "actualcost": "ActualCost", "amortizedcost": "AmortizedCost", "usage": None}


class ManifestError(ValueError):
    """A delivery that cannot be imported as it is; the message says what to do. Nothing was sent."""


@dataclass(frozen=True)
class Part:
    path: Path
    rows: int | None  # as the manifest reports it


@dataclass(frozen=True)
class Delivery:
    """One export run (or a folder of part files without a manifest)."""

    folder: Path
    parts: list[Part]
    run_id: str = ""
    dataset: str = ""
    metric: str | None = None
    period: str = ""
    rows: int | None = None  # the manifest's dataRowCount

    def describe(self) -> str:
        if not self.run_id:
            return f"{len(self.parts)} file(s) from {self.folder.name}/ (no manifest)"
        return f"{self.dataset} export run {self.run_id} ({self.period}): {len(self.parts)} part(s), {self.rows} rows"


def is_cost_file(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(COST_SUFFIXES)


def read_delivery(folder: Path) -> Delivery:
    """The delivery a folder holds: its manifest's parts (all of them, or ManifestError), else every cost file."""
    manifests = sorted(folder.rglob(MANIFEST))
    if len(manifests) > 1:
        raise ManifestError(
            f"{folder} holds {len(manifests)} manifests ({', '.join(str(m.relative_to(folder)) for m in manifests)}); "
            "import one export run folder at a time"
        )
    if not manifests:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_cost_file(p))
        if not files:
            raise ManifestError(f"{folder} holds no cost files (.csv, .csv.gz, .parquet) and no {MANIFEST}")
        return Delivery(folder, [Part(p, None) for p in files])
    manifest = manifests[0]
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{manifest} is not a readable export manifest ({exc}); export the run again") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{manifest} is not an export manifest (a JSON object with blobs)")
    config = doc.get("exportConfig") or {}
    run = doc.get("runInfo") or {}
    dataset = str(config.get("type") or "")
    if dataset.lower() not in COST_DATASETS:
        raise ManifestError(
            f"{manifest}: dataset {dataset or '(none)'} is not cost data; Costlake imports the FocusCost, "
            "ActualCost and AmortizedCost exports"
        )
    by_name: dict[str, list[Path]] = {}
    for path in manifest.parent.rglob("*"):
        if path.is_file() and path.name != MANIFEST:
            by_name.setdefault(path.name, []).append(path)
    parts, missing = [], []
    for blob in doc.get("blobs") or []:
        name = str((blob or {}).get("blobName") or "")
        found = by_name.get(name.rsplit("/", 1)[-1], [])
        if not found:
            missing.append(name)
            continue
        rows = blob.get("dataRowCount")
        parts.append(Part(found[0], int(rows) if isinstance(rows, int | float | str) and str(rows).isdigit() else None))
    if missing:
        raise ManifestError(
            f"{manifest} lists {len(missing)} part(s) not in {manifest.parent}: {', '.join(missing[:5])}; wait until "
            "the export has finished writing, or copy every part of the run, then import the folder again"
        )
    if not parts:
        raise ManifestError(f"{manifest} lists no parts; the run exported nothing")
    total = doc.get("dataRowCount")
    start, end = str(run.get("startDate") or "")[:10], str(run.get("endDate") or "")[:10]
    return Delivery(
        folder=manifest.parent,
        parts=parts,
        run_id=str(run.get("runId") or manifest.parent.name),
        dataset=dataset,
        metric=COST_DATASETS[dataset.lower()],
        period=f"{start}..{end}" if end else start,
        rows=int(total) if isinstance(total, int) else None,
    )
