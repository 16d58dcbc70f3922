"""Principals of each role for tests that call the backend's writes directly."""

from backend.auth import Principal, Role

VIEWER = Principal(email="viewer@example.com", name="Vera Viewer", role=Role.viewer)
EDITOR = Principal(email="editor@example.com", name="Ed Editor", role=Role.editor)
ADMIN = Principal(email="admin@example.com", name="Ada Admin", role=Role.admin)
