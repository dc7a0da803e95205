"""The docs say what the code does."""

from __future__ import annotations

from pathlib import Path

from lunogram_server.config import SETTINGS_DOC


def test_readme_configuration_table_lists_every_setting() -> None:
    """The README's table is generated from config.SETTINGS_DOC; this keeps the two from drifting."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name, default, meaning in SETTINGS_DOC:
        assert f"| `{name}` | {default} | {meaning} |" in readme, name
