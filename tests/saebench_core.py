"""A transcription of SAEBench's core-eval formulas, the reference for `compat=saebench`.

SAEBench needs numpy<2 / datasets<4, so it cannot be installed beside saeeval's pins; these functions transcribe
adamkarvonen/SAEBench `sae_bench/evals/core/main.py` at commit 8042bb3828c6340da8d12062324e92b2077c571c
(v0.6.0): `get_recons_loss` (clean / spliced / zero-ablated forwards, its `kl`), the aggregation of
`get_downstream_reconstruction_metrics` and the scalar metrics of `get_sparsity_and_variance_metrics`, line for
line in their arithmetic; only the plumbing (activation store, tqdm, feature-wise statistics, hook_layer lookup
from `sae.cfg`) is left out. Like SAEBench's `run_evals`, a hook_z SAE gets flattened `[..., H*dh]` inputs.
"""

from __future__ import annotations

from typing import Any

import torch


def _keep(batch_tokens: torch.Tensor, ignore_tokens: set[int]) -> torch.Tensor:
    return torch.logical_not(torch.any(torch.stack([batch_tokens == t for t in ignore_tokens], dim=0), dim=0))


@torch.no_grad()
def get_recons_loss(
    sae: Any,
    model: Any,
    batch_tokens: torch.Tensor,
    ignore_tokens: set[int],
    exclude_special_tokens_from_reconstruction: bool,
) -> dict[str, torch.Tensor]:
    hook_name = sae.cfg.metadata.hook_name
    original_logits, original_ce_loss = model(batch_tokens, return_type="both", loss_per_token=True)
    if len(ignore_tokens) > 0 and exclude_special_tokens_from_reconstruction:
        mask = _keep(batch_tokens, ignore_tokens)
    else:
        mask = torch.ones_like(batch_tokens, dtype=torch.bool)

    def standard_replacement_hook(activations, hook):
        reconstructed = sae.decode(sae.encode(activations)).to(activations.dtype)
        return torch.where(mask[..., None], reconstructed, activations)

    def all_head_replacement_hook(activations, hook):
        new = sae.decode(sae.encode(activations.flatten(-2, -1))).to(activations.dtype)
        new = new.reshape(activations.shape)
        return torch.where(mask[..., None, None], new, activations)

    def standard_zero_ablate_hook(activations, hook):
        return torch.zeros_like(activations)

    if "hook_z" in hook_name:
        replacement_hook = all_head_replacement_hook
    else:
        replacement_hook = standard_replacement_hook
    recons_logits, recons_ce_loss = model.run_with_hooks(
        batch_tokens, return_type="both", fwd_hooks=[(hook_name, replacement_hook)], loss_per_token=True
    )
    zero_abl_logits, zero_abl_ce_loss = model.run_with_hooks(
        batch_tokens, return_type="both", fwd_hooks=[(hook_name, standard_zero_ablate_hook)], loss_per_token=True
    )

    def kl(original_logits, new_logits):
        original_probs = torch.nn.functional.softmax(original_logits, dim=-1)
        log_original_probs = torch.log(original_probs)
        new_probs = torch.nn.functional.softmax(new_logits, dim=-1)
        log_new_probs = torch.log(new_probs)
        return (original_probs * (log_original_probs - log_new_probs)).sum(dim=-1)

    return {
        "kl_div_with_sae": kl(original_logits, recons_logits),
        "kl_div_with_ablation": kl(original_logits, zero_abl_logits),
        "ce_loss_with_sae": recons_ce_loss,
        "ce_loss_without_sae": original_ce_loss,
        "ce_loss_with_ablation": zero_abl_ce_loss,
    }


def get_downstream_reconstruction_metrics(
    sae: Any,
    model: Any,
    batches: list[torch.Tensor],
    ignore_tokens: set[int],
    exclude_special_tokens_from_reconstruction: bool,
) -> dict[str, float]:
    metrics_dict: dict[str, list[torch.Tensor]] = {}
    for batch_tokens in batches:
        for name, value in get_recons_loss(
            sae, model, batch_tokens, ignore_tokens, exclude_special_tokens_from_reconstruction
        ).items():
            if len(ignore_tokens) > 0:
                mask = _keep(batch_tokens, ignore_tokens)
                if value.shape[1] != mask.shape[1]:
                    mask = mask[:, :-1]  # ce loss will be missing the last value
                value = value[mask]
            metrics_dict.setdefault(name, []).append(value)
    metrics = {name: torch.cat(values).mean().item() for name, values in metrics_dict.items()}
    metrics["kl_div_score"] = (metrics["kl_div_with_ablation"] - metrics["kl_div_with_sae"]) / metrics[
        "kl_div_with_ablation"
    ]
    metrics["ce_loss_score"] = (metrics["ce_loss_with_ablation"] - metrics["ce_loss_with_sae"]) / (
        metrics["ce_loss_with_ablation"] - metrics["ce_loss_without_sae"]
    )
    return metrics


@torch.no_grad()
def get_sparsity_and_variance_metrics(
    sae: Any, model: Any, batches: list[torch.Tensor], ignore_tokens: set[int]
) -> dict[str, float]:
    hook_name = sae.cfg.metadata.hook_name
    metric_dict: dict[str, list[torch.Tensor]] = {
        k: []
        for k in (
            "l2_norm_in",
            "l2_norm_out",
            "l2_ratio",
            "relative_reconstruction_bias",
            "l0",
            "l1",
            "explained_variance_legacy",
            "mse",
            "cossim",
        )
    }
    mean_sum_of_squares, mean_act_per_dimension, mean_sum_of_resid_squared = [], [], []
    for batch_tokens in batches:
        mask = (
            _keep(batch_tokens, ignore_tokens)
            if len(ignore_tokens) > 0
            else torch.ones_like(batch_tokens, dtype=torch.bool)
        )
        flattened_mask = mask.flatten()
        _, cache = model.run_with_cache(batch_tokens, prepend_bos=False, names_filter=[hook_name])
        original_act = cache[hook_name].flatten(-2, -1) if "hook_z" in hook_name else cache[hook_name]
        sae_feature_activations = sae.encode(original_act)
        sae_out = sae.decode(sae_feature_activations)
        flattened_sae_input = original_act.flatten(0, 1)[flattened_mask]
        flattened_sae_feature_acts = sae_feature_activations.flatten(0, 1)[flattened_mask]
        flattened_sae_out = sae_out.flatten(0, 1)[flattened_mask]

        l2_norm_in = torch.norm(flattened_sae_input, dim=-1)
        l2_norm_out = torch.norm(flattened_sae_out, dim=-1)
        l2_norm_in_for_div = l2_norm_in.clone()
        l2_norm_in_for_div[torch.abs(l2_norm_in_for_div) < 0.0001] = 1
        x_hat_norm_squared = torch.norm(flattened_sae_out, dim=-1) ** 2
        x_dot_x_hat = (flattened_sae_input * flattened_sae_out).sum(dim=-1)
        metric_dict["l2_norm_in"].append(l2_norm_in)
        metric_dict["l2_norm_out"].append(l2_norm_out)
        metric_dict["l2_ratio"].append(l2_norm_out / l2_norm_in_for_div)
        metric_dict["relative_reconstruction_bias"].append(
            (x_hat_norm_squared.mean() / x_dot_x_hat.mean()).unsqueeze(0)
        )
        metric_dict["l0"].append((flattened_sae_feature_acts != 0).sum(dim=-1).float())
        metric_dict["l1"].append(flattened_sae_feature_acts.sum(dim=-1))

        resid_sum_of_squares = (flattened_sae_input - flattened_sae_out).pow(2).sum(dim=-1)
        mse = resid_sum_of_squares / flattened_mask.sum()
        batched_variance_sum = (flattened_sae_input - flattened_sae_input.mean(dim=0)).pow(2).sum(dim=-1)
        metric_dict["explained_variance_legacy"].append(1 - resid_sum_of_squares / batched_variance_sum)
        mean_sum_of_squares.append(flattened_sae_input.pow(2).sum(dim=-1).mean(dim=0))
        mean_act_per_dimension.append(flattened_sae_input.pow(2).mean(dim=0))
        mean_sum_of_resid_squared.append(resid_sum_of_squares.mean(dim=0))
        x_normed = flattened_sae_input / torch.norm(flattened_sae_input, dim=-1, keepdim=True)
        x_hat_normed = flattened_sae_out / torch.norm(flattened_sae_out, dim=-1, keepdim=True)
        metric_dict["mse"].append(mse)
        metric_dict["cossim"].append((x_normed * x_hat_normed).sum(dim=-1))

    metrics = {name: torch.cat(values).mean().item() for name, values in metric_dict.items()}
    mean_sum_of_squares_tensor = torch.stack(mean_sum_of_squares).mean(dim=0)
    mean_act_per_dimension_tensor = torch.cat(mean_act_per_dimension).mean(dim=0)
    total_variance = mean_sum_of_squares_tensor - mean_act_per_dimension_tensor**2
    residual_variance = torch.stack(mean_sum_of_resid_squared).mean(dim=0)
    metrics["explained_variance"] = (1 - residual_variance / total_variance).item()
    return metrics
