"""Bundled tiny models and their SAEs (data files built by scripts/build_zoo.py)."""
