"""Tests for the pipeline runner and steps."""
