"""The ``detlite`` command line."""
