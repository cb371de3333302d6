"""Names of hook points: which hook an SAE reads from and which block a hook belongs to.

Every layer reads these (loading checks them, the engine plans and splices by them, features and outputs name by
them), so they live below all of them and import nothing of saeeval.
"""

from __future__ import annotations

import re
from typing import Any

_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


def sae_hook(sae: Any) -> str:
    """The hook an sae_lens SAE reads from and writes back to (`sae.cfg.metadata.hook_name`)."""
    return sae.cfg.metadata.hook_name


def hook_layer(hook_name: str) -> int | None:
    """Block index of a hook (`blocks.3.attn.hook_z` -> 3); None for hooks outside the blocks (embeddings...)."""
    m = _LAYER_RE.match(hook_name)
    return int(m.group(1)) if m else None
