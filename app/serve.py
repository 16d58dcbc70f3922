"""`python -m app.serve`: start Costlake's services and scheduler in this process, then serve the Streamlit app."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# Imported before any service thread starts: the scheduler's first run imports pandas & co. in a worker
# thread, and a concurrent first import of the same modules from two threads can see them half-initialised.
from streamlit.web import cli

from backend.config import get_settings
from backend.logs import setup_logging

log = logging.getLogger("app.serve")

MAIN = Path(__file__).resolve().parent / "main.py"


def main() -> None:
    settings = get_settings()
    setup_logging(settings)
    from app import process

    # Before the server: Streamlit runs page code only when a browser connects, and the scheduler
    # must run the pipeline whether or not anyone is looking.
    process.start(settings)

    log.info("serving %s", MAIN)
    # Exactly what `streamlit run app/main.py [flags]` does, through Streamlit's own command line.
    try:
        cli.main.main(args=["run", str(MAIN), *sys.argv[1:]], prog_name="streamlit")
    finally:
        process.shutdown()


if __name__ == "__main__":
    main()
