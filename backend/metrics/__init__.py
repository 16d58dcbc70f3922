"""Prometheus metrics of Costlake: a collector that reads the run history and the mart, and its HTTP endpoint."""
