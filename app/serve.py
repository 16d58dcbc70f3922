"""`python -m app.serve`: start Costlake's services and scheduler in this process, then serve the Streamlit app."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# Imported before any service thread starts: the scheduler's first run imports pandas & co. in a worker
# thread, and a concurrent first import of the same modules from two threads can see them half-initialised.
from streamlit.web import cli

from backend.auth.oidc import AuthNotConfiguredError, check_startup, streamlit_secrets_files, write_secrets_file
from backend.config import Settings, get_settings
from backend.logs import setup_logging

log = logging.getLogger("app.serve")

MAIN = Path(__file__).resolve().parent / "main.py"


def auth_flags(settings: Settings) -> list[str]:
    """Streamlit flags that make AUTH_* sign-in reach st.login: a generated 0600 secrets file (after the usual
    secrets files, so they still load) named through secrets.files. None when sign-in is not set that way."""
    if not settings.auth_configured:
        return []
    generated = write_secrets_file(settings)
    return [f"--secrets.files={path}" for path in streamlit_secrets_files(settings, generated)]


def main() -> None:
    settings = get_settings()
    setup_logging(settings)
    try:
        mode = check_startup(settings)
    except AuthNotConfiguredError as exc:
        log.critical("not starting: %s", exc)
        raise SystemExit(2) from exc
    log.info("sign-in: %s%s", mode.mode, f" ({mode.source})" if mode.source else "")
    flags = auth_flags(settings)
    from app import process

    # Before the server: Streamlit runs page code only when a browser connects, and the scheduler
    # must run the pipeline whether or not anyone is looking.
    process.start(settings)

    log.info("serving %s", MAIN)
    # Exactly what `streamlit run app/main.py [flags]` does, through Streamlit's own command line.
    try:
        cli.main.main(args=["run", str(MAIN), *flags, *sys.argv[1:]], prog_name="streamlit")
    finally:
        process.shutdown()


if __name__ == "__main__":
    main()
