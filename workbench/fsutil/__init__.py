"""Filesystem helpers every layer may use: patterns, safe extraction and paths, atomic destination writes."""
