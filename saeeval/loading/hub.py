"""Hugging Face hub access for models and SAEs: offline fails fast, and no local folder shadows a hub name.

Without network, huggingface_hub retries every request for ~30 s before falling back to the cache; with
`HF_HUB_OFFLINE=1` it answers from the cache at once. So when the hub's endpoint cannot be reached (a
connection attempt of a few seconds), loading runs in offline mode: cached files load immediately and a
missing one fails immediately. transformers and TransformerLens load a *local folder* named like the hub
repo (`./gpt2`) in place of the hub model, so hub loading runs from an empty temporary working directory.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import huggingface_hub.constants as hf_constants

PROBE_TIMEOUT_S = 3.0


def hub_reachable(endpoint: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub endpoint opens within `timeout` seconds (DNS lookup included)."""
    url = urlsplit(endpoint or hf_constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (80 if url.scheme == "http" else 443)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def offline_reason() -> str | None:
    """Why the hub is not used ("HF_HUB_OFFLINE is set" / "the hub ... is unreachable"), or None when it is."""
    if hf_constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if not hub_reachable():
        return f"{hf_constants.ENDPOINT} is unreachable"
    return None


@contextlib.contextmanager
def hub_access() -> Iterator[str | None]:
    """Load from the hub inside this block; yields the offline reason (None when the hub is reachable).

    Offline mode is switched on for the block when the hub cannot be reached, and the working directory is an
    empty temporary folder so that no local folder can stand in for a hub repo.
    """
    reason = offline_reason()
    previous = hf_constants.HF_HUB_OFFLINE, hf_constants.HF_HUB_CACHE
    hf_constants.HF_HUB_OFFLINE = reason is not None
    hf_constants.HF_HUB_CACHE = cache_dir()  # a relative cache path must survive the change of directory
    try:
        with tempfile.TemporaryDirectory(prefix="saeeval-hub-cwd-") as empty, contextlib.chdir(empty):
            yield reason
    finally:
        hf_constants.HF_HUB_OFFLINE, hf_constants.HF_HUB_CACHE = previous


def cache_dir() -> str:
    """The Hugging Face hub cache folder in use (for error messages)."""
    return os.path.abspath(hf_constants.HF_HUB_CACHE)
