"""Feature attribution (`features=attribution`): which SAE latents move the task's logit difference.

attribution.py (gradients and exact edits of one SAE's latents), metrics.py (their torchmetrics states),
callback.py (the Lightning Callback that runs them on the test batches), summary.py (features.json), files.py
(features.json on disk), display.py (charts, table), options.py and setup.py (what to attribute, checked up front).
"""
