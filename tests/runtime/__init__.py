"""Tests for the embedded runtime."""
