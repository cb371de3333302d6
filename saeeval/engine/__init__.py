"""The splicing engine: conditions, masks, the clean and spliced passes, scoring, generation and the LightningModule.

It receives the model and SAEs as objects: it never imports saeeval.loading or Hydra.
"""
