"""`python -m saeeval +task=toxicity`: the same command as `saeeval` (saeeval.cli.main)."""

from saeeval.cli.main import entry

if __name__ == "__main__":
    entry()
