"""The fleet's vCenter and event settings in the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.config import load_config
from scanner.errors import ConfigError


def test_fallback_is_snapshot_or_nothing(tmp_path: Path) -> None:
    (tmp_path / "ok.toml").write_text('[fleet]\nhost = "esx1"\nfallback = "snapshot"\n')
    assert load_config(tmp_path / "ok.toml").fleet.fallback == "snapshot"
    assert load_config(None, state_dir=tmp_path).fleet.fallback == ""  # default: a job waits for its host
    (tmp_path / "bad.toml").write_text('[fleet]\nfallback = "migrate"\n')
    with pytest.raises(ConfigError, match=r"\[fleet\]: fleet.fallback must be \"\" or \"snapshot\", not 'migrate'"):
        load_config(tmp_path / "bad.toml")


def test_event_sinks_are_accepted_with_a_postgresql_state(tmp_path: Path) -> None:
    (tmp_path / "f.toml").write_text(
        '[state]\nurl = "postgresql://avscan@127.0.0.1:1/avscan"\n'
        f'[[events.sinks]]\nkind = "jsonl"\nname = "file"\npath = "{tmp_path / "e.jsonl"}"\n'
    )
    config = load_config(tmp_path / "f.toml")
    assert config.state.url and [s["name"] for s in config.event_sinks] == ["file"]
