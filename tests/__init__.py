"""Costlake test suite: mirrors backend/ and scheduler/, talks to real servers started by conftest fixtures."""
