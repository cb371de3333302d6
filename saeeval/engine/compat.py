"""`compat=saelens|saebench`: reproduce SAELens `run_evals` / SAEBench core numbers on the same tokens.

saeeval's own definitions are batch-independent and ablate only where an SAE would be spliced. The two tools
differ in four ways, and a compat mode switches exactly those (read from sae_lens 6.54 `sae_lens/evals.py` and
SAEBench 0.6.0 `sae_bench/evals/core/main.py`, commit 8042bb3828c6340da8d12062324e92b2077c571c):

- ablation: both zero every position, BOS and the excluded token ids included (`standard_zero_ablate_hook`
  has no mask), so ablated CE/KL and the scores built on them differ at hooks where BOS matters;
- CE: both count a prediction when its *input* token is kept (`mask[:, :-1]` on TransformerLens'
  `loss_per_token`), whatever the target; saeeval asks both input and target to be scored;
- SAEBench counts reconstruction only at non-special tokens (its `ignore_tokens` = BOS/EOS/PAD), even where it
  splices them (its default splices BOS);
- batch-dependent definitions (relative reconstruction bias, SAEBench's MSE and explained variance, the legacy
  explained variance) are computed per batch as they do and reported under their own names next to saeeval's
  (`<metric>_saelens`, `<metric>_saebench`), see saeeval.metrics.batchwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from saeeval.errors import SaeevalError


@dataclass(frozen=True)
class Compat:
    """What one compatibility mode changes (see the module docstring)."""

    name: str
    ablate_special: bool = False
    ce_input_only: bool = False
    recon_within_score: bool = False

    @property
    def batchwise(self) -> str | None:
        """The tool whose per-batch reconstruction metrics are reported (None: saeeval's own only)."""
        return None if self.name == "none" else self.name


MODES = {
    "none": Compat("none"),
    "saelens": Compat("saelens", ablate_special=True, ce_input_only=True),
    "saebench": Compat("saebench", ablate_special=True, ce_input_only=True, recon_within_score=True),
}


def get_compat(name: str | Compat | None) -> Compat:
    """The mode named `name` (none, saelens, saebench)."""
    if isinstance(name, Compat):
        return name
    key = "none" if name is None else str(name)
    if key not in MODES:
        raise SaeevalError(f"compat={key!r} is unknown; use one of {', '.join(MODES)}")
    return MODES[key]
