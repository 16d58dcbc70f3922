"""Costlake backend: everything that is not UI (config, runtime, sources, ingest, lake, medallion, mart, analytics, agent, pipeline)."""
