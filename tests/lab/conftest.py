"""Lab fixtures (``lab`` marker is registered in pyproject.toml)."""

from __future__ import annotations

from scanner.lab.pytest_plugin import lab_guest, start_lab_guest

__all__ = ["lab_guest", "start_lab_guest"]
