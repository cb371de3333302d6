"""`saeeval --help`: the tool's own front page (what it does, the main commands, every config group and its
choices, where the docs are), printed before Hydra starts. Hydra's own help stays one flag away."""

from __future__ import annotations

from collections.abc import Sequence

from saeeval.api.config_tree import GROUPS, group_options

HELP_FLAGS = ("--help", "-h")
DOCS = (
    "README.md and docs/ in the saeeval source tree (`mkdocs serve` shows them as a site);\n"
    "      ARCHITECTURE.md maps the code"
)
_USAGE = """\
saeeval: what does splicing sparse autoencoders (SAEs) into a language model do to it?

usage: saeeval +task=TASK [group=choice ...] [key=value ...]      (or: python -m saeeval ...)

  saeeval +task=toxicity                           bundled tiny model and its SAEs, offline
  saeeval +task=ioi model=gpt2-small saes=gpt2-small-res-jb saes.layers=[5,8]
  saeeval +task=ioi features=attribution           which SAE latents move the logit difference
  saeeval -m +task=ioi,toxicity splice=each_layer  a sweep (on SLURM: hydra/launcher=submitit_slurm)
  python -m saeeval.report outputs/ multirun/      compare finished runs in one HTML page
"""
_OPTIONS = """\
top-level keys: seed, batch_size, limit, dtype, device, force, plot, compat (e.g. limit=100)

  --cfg job        print the composed config of this command line (every key and its value)
  --hydra-help     Hydra's own help (launchers, sweeps, output folders)
"""


def wants_help(argv: Sequence[str]) -> bool:
    """True when the command line asks for saeeval's help (`--help` / `-h`) rather than running."""
    return any(arg in HELP_FLAGS for arg in argv)


def help_text() -> str:
    """The help page: usage, the config groups with their choices (read from the installed config tree), docs."""
    width = max(len(g) for g in GROUPS)
    groups = "\n".join(f"  {g:<{width}}  {', '.join(group_options(g))}" for g in GROUPS)
    head = "config groups (group=choice; the task is appended: +task=...):"
    return f"{_USAGE}\n{head}\n{groups}\n\n{_OPTIONS}\ndocs: {DOCS}\n"


def print_help() -> None:
    print(help_text(), end="")
