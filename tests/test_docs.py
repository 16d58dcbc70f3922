"""The README documents every setting, and the example env file names every setting too."""

from __future__ import annotations

from backend.config import REPO_ROOT, Settings


def test_readme_lists_every_setting():
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in readme]
    assert not missing, f"README settings table lacks {missing}"


def test_env_example_has_no_secret_values():
    for line in (REPO_ROOT / ".env.example").read_text().splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if any(word in key for word in ("SECRET", "PASSWORD", "API_KEY")):
            assert value == "", f"{key} must be empty in .env.example"
