"""Check the composed config before anything is built: every key is one its consumer takes, every value has
the type that consumer declares, nothing required is left unset. Each problem is one line with the fix.

The schema is not written twice: a node's valid keys and types are the signature of what consumes it (its
`_target_`, e.g. `lightning.pytorch.Trainer`; `conditions.build_conditions` for `splice`; a nested node with its
own `_target_`, e.g. `mask.splice`, is checked against that one), and the top level's
are `TOP_LEVEL` below. Plain overrides are passed to Hydra as `++key=value`, so a misspelled key reaches this
check (one line naming the closest valid key) instead of Hydra's struct error, and `+key=value` is caught too.
"""

from __future__ import annotations

import collections.abc
import difflib
import functools
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from saeeval.api.config_tree import GROUPS, REQUIRED_GROUPS, group_options
from saeeval.errors import SaeevalError, first_line

# The top-level options of conf/config.yaml and their types (tests pin that both list the same keys).
TOP_LEVEL: dict[str, Any] = {
    "seed": int,
    "batch_size": int,
    "limit": int | None,
    "dtype": str,
    "device": str,
    "force": bool,
    "plot": bool,
    "compat": typing.Literal["none", "saelens", "saebench"],
}
# Nodes without a `_target_`: the function their keys are passed to.
CONSUMERS = {"splice": "saeeval.engine.conditions.build_conditions"}
_HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}
_INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")


def widen_overrides(argv: Sequence[str]) -> list[str]:
    """`key=value` → `++key=value` for config keys (not group choices, not hydra.*, not already prefixed), so an
    unknown key is composed in and reported by `check_config` with its closest valid key."""
    out = []
    for arg in argv:
        key, eq, _ = arg.partition("=")
        plain = eq and not arg.startswith(("-", "+", "~")) and re.fullmatch(r"[\w.]+", key)
        if plain and key not in GROUPS and key.split(".")[0] != "hydra":
            arg = f"++{arg}"
        out.append(arg)
    return out


def check_config(cfg: DictConfig, choices: Mapping[str, Any] | None = None) -> None:
    """Raise one SaeevalError line for the first missing value, unknown key or mistyped value in `cfg`."""
    choices = choices or {}
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        group = key.split(".")[0]
        via = f" by {group}={choices[group]}" if group in choices and group in GROUPS else ""
        raise SaeevalError(f"{key} is required{via} but has no value: add {key}=<value> to the command line")
    try:
        resolved = cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=True))  # a DictConfig gives a dict
    except Exception as err:  # noqa: BLE001 -- omegaconf raises several types for one cause: a bad ${...}
        raise SaeevalError(f"config value could not be resolved: {first_line(err)}") from None
    for group in REQUIRED_GROUPS:
        if resolved.get(group) is None:
            options = ", ".join(group_options(group))
            raise SaeevalError(f"no {group} chosen: choose one with {group}=<name> (one of {options})")
    raw = cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=False))
    _check_node("", resolved, raw, TOP_LEVEL, open_=False, known=[*TOP_LEVEL, *GROUPS, "hydra"])
    for group in GROUPS:
        node = resolved.get(group)
        if isinstance(node, dict):
            _check_group(group, node, raw.get(group) or {}, choices.get(group))


def _check_group(group: str, node: dict[str, Any], raw: dict[str, Any], choice: Any) -> None:
    target = node.get("_target_") or CONSUMERS.get(group)
    if target is None:
        key = next(iter(node), None)
        if key is not None:
            raise SaeevalError(f"{group}={choice} takes no options, got {group}.{key}: choose another {group} config")
        return
    params, open_ = _signature(str(target))
    if params is None:
        return
    _check_node(f"{group}.", node, raw, params, open_=open_, known=[*params, *_HYDRA_KEYS], target=str(target))


@functools.cache
def _signature(target: str) -> tuple[dict[str, Any] | None, bool]:
    """Parameter name → type hint of the callable `target` (None when it cannot be imported), and whether it
    takes **kwargs."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
        sig = inspect.signature(obj)
    except Exception:  # noqa: BLE001 -- an unimportable target is reported by instantiate with its own line
        return None, True
    func = obj.__init__ if inspect.isclass(obj) else obj
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 -- unresolvable annotations: keep the key check, skip the type check
        hints = {}
    params = {
        n: hints.get(n, Any) for n, p in sig.parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    open_ = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    return params, open_


def _check_node(
    prefix: str,
    node: dict[str, Any],
    raw: dict[str, Any],
    types_: Mapping[str, Any],
    *,
    open_: bool,
    known: list[str],
    target: str | None = None,
) -> None:
    for key, value in node.items():
        if key in _HYDRA_KEYS or (not prefix and key in (*GROUPS, "hydra")):
            continue
        if key not in types_:
            if not open_:
                raise _unknown_key(prefix, key, known, target)
            continue
        if isinstance(value, dict) and "_target_" in value:  # a nested object (mask.splice): its own signature
            params, nested_open = _signature(str(value["_target_"]))
            if params is not None:
                sub_raw = cast("dict[str, Any]", raw.get(key)) if isinstance(raw.get(key), dict) else {}
                _check_node(
                    f"{prefix}{key}.",
                    value,
                    sub_raw,
                    params,
                    open_=nested_open,
                    known=[*params, *_HYDRA_KEYS],
                    target=str(value["_target_"]),
                )
            continue
        expected = types_[key]
        if _matches(value, expected) is False:
            source = _INTERPOLATION.match(str(raw.get(key, "")))
            name = source.group(1) if source else f"{prefix}{key}"
            raise SaeevalError(f"{name}={_show(value)} has the wrong type: expected {_describe(expected)}")


def _unknown_key(prefix: str, key: str, known: list[str], target: str | None) -> SaeevalError:
    choices = [k for k in known if k not in _HYDRA_KEYS]
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    where = f"{prefix.rstrip('.')} ({target})" if target else (prefix.rstrip(".") or "the top level")
    if close:
        hint = f"did you mean {prefix}{close[0]}?"
    else:
        hint = f"valid keys of {where}: {', '.join(choices[:12])}{', ...' if len(choices) > 12 else ''}"
    return SaeevalError(f"unknown config key '{prefix}{key}': {hint}")


def _matches(value: Any, tp: Any) -> bool | None:
    """True/False when `value` surely does/does not fit the type hint `tp`; None when the hint is beyond this
    check (a class such as an Accelerator), so only sure mismatches are reported."""
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, arg) for arg in typing.get_args(tp)]
        return True if True in results else (None if None in results else False)
    if origin is typing.Literal:
        return value in typing.get_args(tp) and not isinstance(value, bool)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (str, Path):
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable) or tp in (list, tuple):
        if not isinstance(value, list):
            return False
        args = typing.get_args(tp)
        items = [_matches(v, args[0]) for v in value] if args and origin is not tuple else []
        return False if False in items else True
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        return isinstance(value, dict)
    return None


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in typing.get_args(tp)))
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    names = {
        type(None): "null",
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path",
    }
    if tp in names:
        return names[tp]
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable) or tp in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of ({_describe(args[0])})" if args and origin is not tuple else "a list"
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value).replace("True", "true").replace("False", "false")
