"""The YARA engine: windows, threads, limits, coverage, verdicts."""

from scanner.engine.cache import CacheSettings, ResultCache
from scanner.engine.engine import Engine, Progress, ScanListener, error_verdict
from scanner.engine.matcher import Ruleset
from scanner.engine.settings import EngineSettings

__all__ = [
    "CacheSettings",
    "Engine",
    "EngineSettings",
    "Progress",
    "ResultCache",
    "Ruleset",
    "ScanListener",
    "error_verdict",
]
