"""The names under which a run's numbers are logged (wandb, CSV): the loggers write them, the wandb report's
panels plot them, so both take them from here.

`<condition>/<group>/<metric>` (group task, lm or generation), `<condition>/reconstruction/<hook>/<metric>`,
`slices/<slice>/<condition>/<metric>`, `gaps/<dimension>/<condition>/<metric>` and `features/<sae>/<metric>`.
"""

from __future__ import annotations

FEATURES_KEY = "features"
"""`features/<sae>`: a table of its top latents; `features/<sae>/<metric>`: its headline numbers."""


def condition_key(condition: str, group: str, metric: str) -> str:
    """A condition's task, lm or generation metric."""
    return f"{condition}/{group}/{metric}"


def reconstruction_key(condition: str, hook: str, metric: str) -> str:
    """A condition's reconstruction metric at one hook."""
    return f"{condition}/reconstruction/{hook}/{metric}"


def section_key(section: str, part: str, condition: str, metric: str) -> str:
    """A number of `slices` (part: `identity=african`) or `gaps` (part: the slice field) for one condition."""
    return f"{section}/{part}/{condition}/{metric}"


def feature_key(sae: str, metric: str | None = None) -> str:
    """An SAE's feature-attribution table (metric None) or one of its headline numbers."""
    return f"{FEATURES_KEY}/{sae}" if metric is None else f"{FEATURES_KEY}/{sae}/{metric}"
