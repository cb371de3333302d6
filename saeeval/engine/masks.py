"""Token masks: where SAEs and ablations replace activations (`splice`) and which positions CE/KL count (`score`).

Two jobs, two masks: a splice at one position (IOI S2) changes the predictions at every later position, so the
LM metrics must be able to count positions the splice never touched (a single mask made CE null and KL blind to
the downstream effect). Reconstruction metrics are counted where the SAE is spliced: that is where it reads and
replaces activations. Each mask is a `TokenMask`; padding is always out, whatever the options: with GPT-2 the
pad id equals the BOS/EOS id, so token-id rules alone cannot keep padding out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from saeeval.engine.compat import Compat, get_compat
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
    """Builds one `[B, T]` bool mask (True = selected) for a batch of (possibly left-padded) token rows.

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
        }

    def __repr__(self) -> str:
        return f"TokenMask({self.describe()})"


def _token_mask(value: TokenMask | Mapping[str, Any] | None) -> TokenMask:
    if value is None:
        return TokenMask()
    if isinstance(value, TokenMask):
        return value
    return TokenMask(**dict(value))


@dataclass(frozen=True)
class BatchMasks:
    """One batch's masks `[B, T]`: `splice` (SAEs replace activations, reconstruction is counted), `ablate`
    (ablation baselines replace activations) and `score` (CE and KL count)."""

    splice: torch.Tensor
    ablate: torch.Tensor
    score: torch.Tensor


class Masks:
    """The splice mask and the score mask of a run (conf/mask/*.yaml).

    Args:
        splice: where SAEs and ablations replace activations (TokenMask options; default: every real token but
            special tokens).
        score: which positions CE and KL count (default: every real token but special tokens).
        positions: shorthand for `splice.positions` (`mask=positions mask.positions=[S2]`); giving both is an
            error unless they agree.
        exclude_token_ids: shorthand: token ids left out of both masks (added to each mask's own).
    """

    def __init__(
        self,
        splice: TokenMask | Mapping[str, Any] | None = None,
        score: TokenMask | Mapping[str, Any] | None = None,
        positions: Sequence[int | str] | None = None,
        exclude_token_ids: Sequence[int] = (),
    ) -> None:
        splice_mask, score_mask = _token_mask(splice), _token_mask(score)
        extra = [int(t) for t in exclude_token_ids]
        if positions is not None:
            shorthand = TokenMask(positions=positions).positions
            if splice_mask.positions is not None and splice_mask.positions != shorthand:
                raise SaeevalError(
                    f"mask.positions={shorthand} and mask.splice.positions={splice_mask.positions} disagree: "
                    "mask.positions is shorthand for mask.splice.positions; set only one of them"
                )
            splice_mask = TokenMask(splice_mask.exclude_special, splice_mask.exclude_token_ids, shorthand)
        self.splice = TokenMask(
            splice_mask.exclude_special, [*splice_mask.exclude_token_ids, *extra], splice_mask.positions
        )
        self.score = TokenMask(
            score_mask.exclude_special, [*score_mask.exclude_token_ids, *extra], score_mask.positions
        )

    def __call__(
        self,
        tokens: torch.Tensor,
        attention_mask: torch.Tensor,
        named_positions: Mapping[str, torch.Tensor] | None = None,
        special_ids: Sequence[int] = (),
        compat: Compat | str | None = None,
    ) -> BatchMasks:
        """The batch's masks. Under a compat mode that ablates special tokens, ablations also replace special
        tokens and excluded token ids at the splice positions (SAELens run_evals and SAEBench core zero every
        position, BOS included)."""
        splice = self.splice(tokens, attention_mask, named_positions, special_ids)
        ablate = splice
        if get_compat(compat).ablate_special:
            everywhere = TokenMask(exclude_special=False, positions=self.splice.positions)
            ablate = everywhere(tokens, attention_mask, named_positions, special_ids)
        score = self.score(tokens, attention_mask, named_positions, special_ids)
        return BatchMasks(splice=splice, ablate=ablate, score=score)

    @property
    def exclude_token_ids(self) -> list[int]:
        """Every token id either mask leaves out (checked against the vocabulary before a run)."""
        return list(dict.fromkeys([*self.splice.exclude_token_ids, *self.score.exclude_token_ids]))

    def describe(self, compat: Compat | str | None = None) -> dict[str, Any]:
        """The masks as recorded in results.json ("mask"), so numbers can be compared knowingly."""
        mode = get_compat(compat)
        return {
            "splice": self.splice.describe(),
            "score": self.score.describe(),
            "ablation": "every real token at the splice positions, special tokens included"
            if mode.ablate_special
            else "the splice mask",
            "reconstruction": "where the SAE is spliced and scored"
            if mode.recon_within_score
            else "where the SAE is spliced",
            "ce_loss": "predictions whose input is scored"
            if mode.ce_input_only
            else "predictions whose input and target are both scored",
            "padding": "excluded",
            "compat": mode.name,
        }

    def __repr__(self) -> str:
        return f"Masks({self.describe()})"
