"""`python -m backend.runtime status`: every service, where it runs (no secrets) and whether it is healthy."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from backend.config import get_settings
from backend.logs import setup_logging
from backend.runtime import Runtime, exit_on_sigterm

log = logging.getLogger("backend.runtime")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="start or join each service and check its health")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--no-spark", action="store_true", help="skip the Spark check (saves ~10 s)")
    args = parser.parse_args(argv)

    settings = get_settings()
    setup_logging(settings)
    exit_on_sigterm()
    runtime = Runtime(settings)
    t0 = time.monotonic()
    runtime.start(spark=not args.no_spark)
    if not args.no_spark and runtime._spark_thread is not None:
        runtime._spark_thread.join(timeout=180)
    rows = [s for s in runtime.status() if not (args.no_spark and s.name == "spark")]
    runtime.stop()
    if args.json:
        sys.stdout.write(json.dumps([r.__dict__ for r in rows], indent=2) + "\n")
    else:
        lines = [f"{'service':<9} {'mode':<9} {'health':<8} {'start s':>7}  location / detail"]
        for r in rows:
            started = f"{r.startup_seconds:.2f}" if r.startup_seconds is not None else "-"
            lines.append(f"{r.name:<9} {r.mode:<9} {'OK' if r.healthy else 'FAILED':<8} {started:>7}  {r.location}")
            lines.append(f"{'':<37}{r.detail}")
        lines.append(f"checked in {time.monotonic() - t0:.1f}s")
        sys.stdout.write("\n".join(lines) + "\n")
    return 0 if all(r.healthy for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
