"""Tests for the Postgres cost mart."""
