"""The package version, apart from `saeeval/__init__.py` so that recording it in a results file imports nothing else."""

__version__ = "0.1.0"
