"""Experiment configuration: Determined's schema, names and defaults, validated once."""
