"""Token masks: which positions are spliced and counted in token metrics.

One `[B, T]` bool mask (True = spliced and counted) drives both the splice and every token metric, so the two
can never disagree (SAEBench applies different rules to each). Padding is always out, whatever the options:
with GPT-2 the pad id equals the BOS/EOS id, so token-id rules alone cannot keep padding out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from saeeval.errors import SaeevalError

_SPECIAL_TOKEN_ATTRS = ("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id")


def special_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the structural special tokens (BOS, EOS, PAD, SEP, decoder start) the tokenizer defines.

    Same attributes as sae_lens `get_special_token_ids`, so "exclude special tokens" means the same thing in both.
    """
    if tokenizer is None:
        return []
    ids = {getattr(tokenizer, attr, None) for attr in _SPECIAL_TOKEN_ATTRS}
    return sorted(int(i) for i in ids if i is not None)


def _parse_position(p: int | str) -> int | str:
    """Hydra may hand "-1" as a string; treat digit strings as indices and anything else as a task name."""
    if isinstance(p, bool):
        raise SaeevalError(f"mask position {p!r} is not an index or a name; use e.g. positions=[-1] or [END]")
    if isinstance(p, int):
        return p
    s = str(p).strip()
    return int(s) if s.lstrip("-").isdigit() else s


class TokenMask:
    """Builds the splice/metric mask for a batch of (possibly left-padded) token rows.

    Args:
        exclude_special: drop positions holding a special token id (BOS/EOS/PAD/SEP), as sae_lens does by default.
        exclude_token_ids: further token ids to drop.
        positions: keep only these positions. An int indexes the real tokens of each row (0 = first real token,
            -1 = last real token, whichever side the padding is on); a string names a task position
            (e.g. IOI "END", toxicity "answer") looked up in `named_positions`. Exclusions still apply.
    """

    def __init__(
        self,
        exclude_special: bool = True,
        exclude_token_ids: Sequence[int] = (),
        positions: Sequence[int | str] | None = None,
    ) -> None:
        self.exclude_special = bool(exclude_special)
        self.exclude_token_ids = [int(t) for t in exclude_token_ids]
        self.positions = None if positions is None else [_parse_position(p) for p in positions]
        if self.positions is not None and not self.positions:
            raise SaeevalError("mask positions=[] selects nothing; give at least one position or positions=null")

    def __call__(
        self,
        tokens: torch.Tensor,
        attention_mask: torch.Tensor,
        named_positions: Mapping[str, torch.Tensor] | None = None,
        special_ids: Sequence[int] = (),
    ) -> torch.Tensor:
        """Return a `[B, T]` bool mask; `named_positions` maps a name to absolute column indices `[B]`."""
        if tokens.shape != attention_mask.shape:
            raise ValueError(f"tokens {tuple(tokens.shape)} and attention_mask {tuple(attention_mask.shape)} differ")
        real = attention_mask.to(torch.bool)
        mask = real.clone()
        drop_ids = list(self.exclude_token_ids) + (list(special_ids) if self.exclude_special else [])
        if drop_ids:
            mask &= ~torch.isin(tokens, torch.tensor(drop_ids, dtype=tokens.dtype, device=tokens.device))
        if self.positions is not None:
            mask &= self._position_mask(real, named_positions or {})
        return mask

    def _position_mask(self, real: torch.Tensor, named: Mapping[str, torch.Tensor]) -> torch.Tensor:
        n_rows, n_cols = real.shape
        rank = torch.cumsum(real.long(), dim=1) - 1  # index of each real token among its row's real tokens
        n_real = real.long().sum(dim=1, keepdim=True)
        chosen = torch.zeros_like(real)
        rows = torch.arange(n_rows, device=real.device)
        for p in self.positions or []:
            if isinstance(p, int):
                target = torch.full_like(n_real, p) if p >= 0 else n_real + p
                chosen |= real & (rank == target)
                continue
            if p not in named:
                offered = ", ".join(sorted(named)) or "none"
                raise SaeevalError(
                    f"mask position {p!r} is not offered by this task (it offers: {offered}); "
                    "use one of those names or an integer index such as -1"
                )
            cols = named[p].to(device=real.device, dtype=torch.long).reshape(-1)
            if cols.shape[0] != n_rows or bool(((cols < 0) | (cols >= n_cols)).any()):
                raise ValueError(f"named position {p!r} must hold one column in [0, {n_cols}) per row")
            chosen[rows, cols] = True
        return chosen

    def describe(self) -> dict[str, Any]:
        """The mask policy as recorded in results.json, so numbers can be compared knowingly."""
        return {
            "exclude_special": self.exclude_special,
            "exclude_token_ids": list(self.exclude_token_ids),
            "positions": None if self.positions is None else list(self.positions),
            "padding": "excluded",
            "applies_to": "splice and token metrics",
        }

    def __repr__(self) -> str:
        return f"TokenMask({self.describe()})"
