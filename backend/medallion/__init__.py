"""Medallion jobs: bronze -> silver (FOCUS-aligned, typed, MERGEd, quarantine) -> gold (aggregates, affected partitions only)."""
