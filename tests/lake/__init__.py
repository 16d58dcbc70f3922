"""Tests for the Delta lake interface."""
