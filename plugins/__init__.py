"""Not a package to import: the source of the built-in framework plugins lives in its folders.

This file exists for one mistake. Python run from the folder that holds a clone of detlite
named ``detlite`` (``cd ~/src && python ...`` with ``~/src/detlite`` the clone) finds the clone
before the installed package and imports it as a namespace package; ``detlite.plugins`` is
then this folder, and ``from detlite.plugins import Plugins`` used to fail with "cannot import
name 'Plugins' from 'detlite.plugins' (unknown location)". Imported under that name, this file
says what happened and how to fix it instead. Imported any other way it does nothing (the
wheel does not ship it: the packages are ``detlite.pytorch`` and its siblings, from the
folders beside it).
"""

from __future__ import annotations

import os

if __name__ == "detlite.plugins":
    _clone = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    raise ImportError(
        f"the folder {_clone} (a clone of detlite's source) shadows the installed detlite "
        f"package: Python found it because you ran Python from {os.path.dirname(_clone)} (or "
        "that folder is on sys.path / PYTHONPATH). Run Python from another folder (for "
        f"example: cd {_clone}), or rename the clone"
    )
