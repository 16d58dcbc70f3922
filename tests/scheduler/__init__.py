"""Tests for the scheduler wiring."""
