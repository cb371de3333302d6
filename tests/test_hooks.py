"""saeeval.engine.hook_context.forward_hooks: the hooks fire for the call and are gone after it, leaving other hooks
alone."""

from __future__ import annotations

import torch

from saeeval.engine.hook_context import forward_hooks
from saeeval.loading.zoo import default_zoo_root, load_zoo_folder


def test_hooks_fire_once_and_leave_the_model_as_found():
    model = load_zoo_folder(default_zoo_root() / "tiny" / "model")
    tokens = torch.tensor([[1, 5, 9, 4]])
    clean = model(tokens)
    seen: list[str] = []
    permanent = model.hook_dict["blocks.0.hook_resid_post"]
    permanent.add_hook(lambda act, hook: seen.append("permanent"), is_permanent=True)

    def zero(act, hook):
        seen.append(hook.name)
        return torch.zeros_like(act)

    with model.hooks(fwd_hooks=[("blocks.1.hook_mlp_out", lambda act, hook: seen.append("outer"))]):
        with forward_hooks(model, [("blocks.0.hook_resid_post", zero), ("blocks.1.hook_resid_pre", zero)]):
            hooked = model(tokens)
        assert seen == ["permanent", "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "outer"]
        seen.clear()
        assert torch.equal(model(tokens), clean)  # the inner hooks are gone, the outer context's still fire
        assert seen == ["permanent", "outer"]
    assert not torch.allclose(hooked, clean)
    assert [len(p.fwd_hooks) for p in model.hook_dict.values() if p.fwd_hooks] == [1]  # only the permanent one
    assert model.context_level == 0
    permanent.remove_hooks(including_permanent=True)
