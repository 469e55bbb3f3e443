"""``det.experimental``: creating experiments and trial instances from Python.

``create`` runs a trial class as an experiment (so far: local test mode) and
``create_trial_instance`` builds a trial for the user to drive, loading and saving the
checkpoint in its ``checkpoint_dir`` (``save_trial_instance``). Importing this package
imports no framework.
"""

from __future__ import annotations

from detlite.experimental._create import create
from detlite.experimental._instance import create_trial_instance, save_trial_instance
from detlite.experimental._test_mode import TestModeResult

__all__ = ["TestModeResult", "create", "create_trial_instance", "save_trial_instance"]
