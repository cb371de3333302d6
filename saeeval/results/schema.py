"""The results contract's fixed names: the schema version, the run folder's file names, and the mark for a value
that became non-finite. Readers and writers of every output share these."""

from __future__ import annotations

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
NAN = "nan"
"""results.json's mark for a value that is NaN/inf because the run's outputs became non-finite (JSON has no NaN;
null means "not applicable"); shown as "NaN"."""
