"""Command line: `python -m backend.notify channels|test KEY|deliveries|send-due` — check channels without the UI."""

from __future__ import annotations

import argparse
import logging
import sys

import sqlalchemy as sa

from backend.config import Settings, get_settings
from backend.logs import setup_logging
from backend.resources import open_resources
from backend.runtime import Runtime

log = logging.getLogger("backend.notify")


def main(argv: list[str] | None = None, *, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.notify", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("channels", help="every channel (settings, added on the page, budgets' webhooks), tokens hidden")
    test = sub.add_parser("test", help="send a test message to one channel now (its key, from `channels`)")
    test.add_argument("key")
    recent = sub.add_parser("deliveries", help="recent deliveries: status, attempts, last error, next attempt")
    recent.add_argument("--limit", type=int, default=20)
    sub.add_parser("send-due", help="deliver what is due now instead of at the next pipeline run")
    args = parser.parse_args(argv)

    settings = settings or get_settings()
    setup_logging(settings)
    resources = open_resources(Runtime(settings))
    try:
        return _command(args, settings, resources.owner)
    finally:
        resources.close()


def _command(args: argparse.Namespace, settings: Settings, engine: sa.Engine) -> int:
    from backend.auth import CLI
    from backend.notify import admin
    from backend.notify.dispatch import dispatch

    out = sys.stdout
    if args.command == "channels":
        rows = admin.channel_rows(settings, engine)
        out.write(f"{'key':<22} {'kind':<16} {'where':<40} receives\n")
        for r in rows:
            note = f"  (cannot send: {r.problem})" if r.problem else ("" if r.enabled else "  (disabled)")
            out.write(f"{r.key:<22} {r.kind:<16} {r.where:<40} {r.events}{note}\n")
        return 0
    if args.command == "test":
        try:
            result = admin.test(settings, engine, args.key, actor=CLI)
        except LookupError as exc:
            log.error("%s", exc)
            return 2
        out.write(f"{args.key}: {result['status']} after {result['attempts']} attempt(s)")
        out.write(
            f" — {result['last_error']}\n" if result.get("last_error") and result["status"] != "delivered" else "\n"
        )
        return 0 if result["status"] == "delivered" else 1
    if args.command == "deliveries":
        for r in admin.recent(engine, limit=args.limit):
            when = r["next_attempt_at"].isoformat(timespec="seconds") if r["next_attempt_at"] else ""
            out.write(
                f"{r['queued_at']:%Y-%m-%d %H:%M} {r['event']:<12} {r['channel']:<24} {r['status']:<9} "
                f"{r['attempts']:>2} {when:<25} {r['last_error'] or ''}\n"
            )
        return 0
    stats = dispatch(engine, settings)
    out.write(f"{stats.as_dict()}\n")
    return 0 if not stats.retrying and not stats.failed else 1


if __name__ == "__main__":
    sys.exit(main())
