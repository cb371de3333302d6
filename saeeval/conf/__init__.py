"""Hydra configuration tree, installed as the package `saeeval.conf`."""
