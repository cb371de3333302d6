"""torchmetrics Metric classes for task, language-modelling and reconstruction metrics."""
