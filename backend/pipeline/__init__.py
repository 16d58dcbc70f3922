"""The pipeline: named steps (ingest -> bronze -> silver -> gold -> mart -> analytics -> budgets), run from the CLI or the scheduler."""
