"""Pure kernels behind the metric classes (as torchmetrics keeps `functional/` apart from its stateful metrics):
no state, no reduction across ranks; the engine's chunked scorer calls them too."""
