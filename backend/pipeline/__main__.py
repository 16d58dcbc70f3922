"""Command line: `python -m backend.pipeline run|import|history` — the same pipeline the scheduler runs, without Streamlit."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from backend.config import get_settings
from backend.logs import setup_logging
from backend.resources import Resources, open_resources
from backend.runtime import Runtime, exit_on_sigterm

log = logging.getLogger("backend.pipeline")


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    from backend.pipeline.steps import ALL_STEPS

    parser = argparse.ArgumentParser(prog="python -m backend.pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run pipeline steps now")
    run.add_argument("--steps", type=_csv, default=None, help=f"comma list, default all: {','.join(ALL_STEPS)}")
    run.add_argument("--sources", type=_csv, default=None, help="comma list: demo, azure, inbox (default: by settings)")
    run.add_argument("--full-rebuild", action="store_true", help="rebuild silver and gold from all of bronze")
    imp = sub.add_parser(
        "import", help="import FOCUS / Azure export files or export run folders (CSV, CSV.gz, Parquet) and process them"
    )
    imp.add_argument("paths", nargs="+", type=Path)
    imp.add_argument("--no-process", action="store_true", help="only land the files in bronze")
    hist = sub.add_parser("history", help="recent runs and their steps")
    hist.add_argument("--limit", type=int, default=10)
    args = parser.parse_args(argv)

    settings = get_settings()
    setup_logging(settings)
    exit_on_sigterm()
    resources = open_resources(Runtime(settings))
    try:
        if args.command == "history":
            return _history(resources, args.limit)
        from backend.pipeline.service import PipelineService

        service = PipelineService(resources)
        if args.command == "run":
            options = {"full_rebuild": args.full_rebuild}
            summary = service.run(steps=args.steps, sources=args.sources, trigger="cli", options=options)
        else:
            # A folder is one export delivery (manifest.json and its parts, or part files).
            missing = [str(p) for p in args.paths if not (p.is_file() or p.is_dir())]
            if missing:
                log.error("no such file: %s", ", ".join(missing))
                return 2
            steps = ["ingest", "bronze"] if args.no_process else None
            summary = service.run(
                steps=steps,
                sources=["files"],
                trigger="cli:import",
                options={"files": [str(p.resolve()) for p in args.paths]},
            )
        for step, result in summary.steps.items():
            log.info("  %-9s rows in %-10s rows out %-10s %s", step, result.rows_in, result.rows_out, result.detail)
        if args.command == "import":
            _load_report(summary)
        if summary.status != "succeeded":
            log.error("run %s %s: %s", summary.run_id, summary.status, summary.error)
            return 1
        log.info("run %s succeeded in %.1fs", summary.run_id, summary.seconds)
        return 0
    finally:
        resources.close()


def _load_report(summary) -> None:
    """What each file brought: format and version, rows, totals per currency and month, quarantine reasons."""
    ingest, silver = summary.steps.get("ingest"), summary.steps.get("silver")
    for report in ingest.detail.get("files", []) if ingest else []:
        log.info(
            "load report %s: %s, %s, %d rows read (%d blank), %d amounts not numbers, %d unreadable days; %s",
            report["file"],
            report["format"],
            report["metric"],
            report["rows_read"],
            report["blank_lines"],
            report["amounts_not_numbers"],
            report["days_unreadable"],
            report["delivery"],
        )
        for note in report.get("notes", []):
            log.info("load report %s:   %s", report["file"], note)
        for currency, months in report["totals"].items():
            for month, total in months.items():
                log.info(
                    "load report %s:   %s %s total %s (%s)",
                    report["file"],
                    month,
                    currency,
                    total,
                    report["cost_column"],
                )
    for skipped in ingest.detail.get("skipped_files", []) if ingest else []:
        log.info("load report %s: %s", skipped["file"], skipped["detail"])
    if silver is not None and silver.detail:
        log.info(
            "load report: %s rows loaded into silver, %s quarantined %s (see the Data quality page)",
            silver.detail.get("valid_rows"),
            silver.detail.get("quarantined"),
            silver.detail.get("quarantine_rules") or "",
        )


def _history(resources: Resources, limit: int) -> int:
    from backend.mart import history

    runs = history.list_runs(resources.owner, limit=limit)
    lines = [f"{'run':<28} {'trigger':<22} {'status':<10} started"]
    lines += [f"{r.run_id:<28} {r.trigger:<22} {r.status:<10} {r.started_at:%Y-%m-%d %H:%M:%S}" for r in runs]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
