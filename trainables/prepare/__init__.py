"""Shared assets, prepared once per study before any trial: pools, teacher scores, training set, warm start, references."""
