"""Publishing finished runs: Lightning loggers (wandb, CSV), the HTML comparison report and the wandb report."""
