"""Reproducible benchmarks: `python -m bench [name ...]`; each writes bench/results/<name>.json and .md."""
