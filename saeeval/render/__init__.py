"""Rendering a results document for people: the metric catalogue, the terminal tables and the charts."""
