"""Runs benchmarks: `python -m bench` runs every bench_*.py module's main() but the opt-in ones; `python -m bench kafka` runs one."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from pathlib import Path

log = logging.getLogger("bench")

# Run only when named: agent_llm builds llama.cpp on its first run and then takes about an hour on 2 cores.
OPT_IN = frozenset({"agent_llm"})


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name[len("bench_") :] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    default = [name for name in available() if name not in OPT_IN]
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: {default}; also {sorted(OPT_IN)})")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--sizes", help="e2e only: comma-separated row counts to run (e.g. 1000000); the results file keeps the others"
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="e2e only: leave each size's lake and mart under DIR, for `python -m bench.e2e_increment DIR/n<rows>`",
    )
    args = parser.parse_args(argv)
    options = {}
    if args.sizes:
        options["sizes"] = [int(size) for size in args.sizes.split(",")]
    if args.keep:
        options["keep"] = Path(args.keep)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    failed = []
    for name in args.names or default:
        module = importlib.import_module(f"bench.bench_{name}")
        log.info("=== bench %s ===", name)
        try:
            module.main(quick=args.quick, **options)
        except Exception:
            log.exception("bench %s failed", name)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
