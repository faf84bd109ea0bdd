"""Shared pytest fixtures."""

import pytest

# --- hand-built reports (formats, config, gate tests; no TensorFlow) ---------------------------
from hand_reports import hand_models, hand_report  # noqa: F401  (registers the fixtures)

# --- end of hand-built reports ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def own_cache_and_key(tmp_path_factory, monkeypatch):
    """Each test gets an empty result cache and its own cache key, never the user's: a test that
    runs gradcheck twice sees its own cache, and no test sees another's results."""
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.delenv("GRADCHECK_CACHE_KEY", raising=False)
    return home
