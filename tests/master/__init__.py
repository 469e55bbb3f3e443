"""Tests of the master (detlite.master) and its HTTP client layer (detlite.api)."""
