"""Run by test_crash.py in a child process: drain into bronze and SIGKILL ourselves after the first bronze commit."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

from backend.ingest.consumer import drain
from backend.lake import lake_from_settings
from tests.conftest import make_settings


def main(config_json: str) -> None:
    logging.basicConfig(level=logging.INFO)
    config = json.loads(config_json)
    settings = make_settings(Path(config.pop("data_dir")), **config)

    def die() -> None:
        # The worst moment: bronze's Delta commit is durable, the Kafka offset commit has not happened.
        os.kill(os.getpid(), signal.SIGKILL)

    drain(settings, lake_from_settings(settings), run_id="crashing", commit_messages=10, after_bronze_write=die)
    raise SystemExit("drain returned: the crash hook never fired")


if __name__ == "__main__":
    main(sys.argv[1])
