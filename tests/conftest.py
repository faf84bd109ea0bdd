"""Shared pytest fixtures."""

# --- hand-built reports (formats, config, gate tests; no TensorFlow) ---------------------------
from hand_reports import hand_models, hand_report  # noqa: F401  (registers the fixtures)

# --- end of hand-built reports ------------------------------------------------------------------
