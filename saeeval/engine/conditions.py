"""Condition planning: which ways of running the model an evaluation compares (SAEs alone, groups, baselines).

Planning is apart from execution (saeeval.engine.splicing runs a planned Condition): a plan is plain data, built from
the SAEs and the `splice` options before any forward pass, so it can be checked and named up front.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sae_lens import SAE

from saeeval.errors import SaeevalError
from saeeval.hooknames import hook_layer, sae_hook

ABLATIONS = ("zero", "mean")


def _hook_key(hook_name: str) -> tuple[int, str]:
    layer = hook_layer(hook_name)
    return (-1 if layer is None else layer, hook_name)


@dataclass(frozen=True)
class Condition:
    """One way of running the model: splice `saes` (ablation None) or ablate `hooks` ("zero" | "mean").

    `baseline` names the ablation condition an SAE condition is scored against (ce_loss_score, ...).
    """

    name: str
    saes: tuple[str, ...]
    hooks: tuple[str, ...]
    ablation: str | None = None
    baseline: str | None = None
    use_error_term: bool = False


def build_conditions(
    saes: Mapping[str, SAE],
    *,
    singles: bool = True,
    groups: Sequence[Sequence[str]] = (),
    ablation: str | None = "zero",
    use_error_term: bool = False,
) -> list[Condition]:
    """Every SAE alone (if `singles`), every group spliced together, and one ablation baseline per hook set.

    Group members are SAE names or hook names ("*" = every SAE). SAE conditions come first, then the baselines
    in order of first use; conditions at the same hooks share one baseline.
    """
    if ablation is not None and ablation not in ABLATIONS:
        raise SaeevalError(f"splice.ablation={ablation!r} is unknown; use zero, mean or null")
    by_hook: dict[str, list[str]] = {}
    for name, sae in saes.items():
        by_hook.setdefault(sae_hook(sae), []).append(name)

    def resolve(member: str) -> list[str]:
        if member == "*":
            return list(saes)
        if member in saes:
            return [member]
        if member in by_hook:
            if len(by_hook[member]) > 1:
                raise SaeevalError(
                    f"splice group member {member!r} is a hook with several SAEs ({', '.join(by_hook[member])}); "
                    "name the SAE instead"
                )
            return by_hook[member]
        raise SaeevalError(
            f"splice group member {member!r} is neither a loaded SAE nor its hook; "
            f"available: {', '.join(sorted(set(saes) | set(by_hook)))}"
        )

    members: list[list[str]] = [[n] for n in saes] if singles else []
    for group in groups:
        if isinstance(group, str):
            raise SaeevalError(f"splice group {group!r} must be a list, e.g. groups=[[{group},<another SAE>]]")
        names = list(dict.fromkeys(n for m in group for n in resolve(str(m))))
        if not names:
            raise SaeevalError("splice group [] is empty; list at least one SAE or hook name")
        hooks: Sequence[str] = [sae_hook(saes[n]) for n in names]
        if len(set(hooks)) < len(hooks):
            dup = next(h for h in hooks if hooks.count(h) > 1)
            raise SaeevalError(
                f"splice group {'+'.join(names)} puts two SAEs at {dup}; a group may hold one SAE per hook"
            )
        members.append(names)

    if not members:
        raise SaeevalError(
            "splice.singles=false with no splice.groups leaves no SAE condition to evaluate: set "
            "splice.singles=true or list groups, e.g. splice.groups=[[*]]"
        )
    conditions: dict[str, Condition] = {}
    baselines: dict[str, Condition] = {}
    for names in members:
        hooks = tuple(sorted({sae_hook(saes[n]) for n in names}, key=_hook_key))
        baseline = None
        if ablation is not None:
            base_name = f"{ablation}_ablation@{'+'.join(hooks)}"
            baselines.setdefault(base_name, Condition(base_name, (), hooks, ablation=ablation))
            baseline = base_name
        name = "+".join(names)
        conditions.setdefault(name, Condition(name, tuple(names), hooks, None, baseline, use_error_term))
    return [*conditions.values(), *baselines.values()]


def hooks_of(conditions: Iterable[Condition]) -> list[str]:
    """Every hook the conditions splice or ablate, in first-use order: what `Splicer.clean` must cache."""
    return list(dict.fromkeys(h for c in conditions for h in c.hooks))
