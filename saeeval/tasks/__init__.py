"""Evaluation tasks, each a LightningDataModule."""
