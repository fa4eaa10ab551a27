"""One quick look at the Hugging Face hub before anything downloads from it, so that an offline machine fails at once.

Without a network, ``transformers`` and ``datasets`` retry for 30-50 s before they give up. Every place
that reaches the hub (hub tokenizers, GLUE and pretraining corpora from the hub, BERT checkpoints)
first calls :func:`require_hub`: one HEAD request to ``huggingface_hub.constants.ENDPOINT`` (so
``HF_ENDPOINT`` mirrors and the ``HTTPS_PROXY`` settings apply), bounded by :data:`PROBE_TIMEOUT`
seconds including the name lookup. When it gets no answer, :class:`HubUnreachableError` (an
``OSError``, as the libraries raise) comes at once and the caller adds its offline hint (local files,
or offline mode with a warm cache).

Offline mode (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``, or ``HF_DATASETS_OFFLINE=1`` for
datasets) skips the probe: the libraries then read their cache without any network call, and fail at
once when it lacks the files. Local folders and files never reach the hub and are never probed
(:func:`is_local`).
"""

from __future__ import annotations

import http.client
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

PROBE_TIMEOUT = 3.0  # seconds: the hub answers in well under a second wherever it is reachable
VERDICT_SECONDS = 60.0  # a probe's answer is reused this long (several GLUE tasks, one probe), then asked again
_TRUE = {"1", "ON", "YES", "TRUE"}
_verdicts: dict[str, tuple[float, str | None]] = {}


class HubUnreachableError(OSError):
    """The Hugging Face hub does not answer (no network, a firewall, a wrong HF_ENDPOINT)."""


def is_local(name_or_path: str | Path) -> bool:
    """Whether a name is a file or folder on this machine (loaded from disk, never from the hub)."""
    return Path(name_or_path).expanduser().exists()


def offline_mode(datasets: bool = False) -> bool:
    """Whether the libraries are told to stay offline: ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``, and for ``datasets``
    ``HF_DATASETS_OFFLINE`` (which, when set, decides alone, as in datasets/config.py)."""
    if datasets and os.environ.get("HF_DATASETS_OFFLINE") is not None:
        return os.environ["HF_DATASETS_OFFLINE"].upper() in _TRUE
    return (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper() in _TRUE


def endpoint() -> str:
    """The hub's address as the libraries use it (``HF_ENDPOINT`` or https://huggingface.co)."""
    from huggingface_hub import constants  # a dependency of transformers and datasets

    return constants.ENDPOINT


def _ask(url: str, timeout: float) -> str | None:
    """One HEAD request: None when any server answers (any HTTP status), else why not."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "flexibert-hub-probe"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:  # a status such as 404 or 503 is an answer: the libraries say what it means
        return None
    except urllib.error.URLError as err:
        if isinstance(err.reason, ssl.SSLError):  # a TLS server answered; the hub client checks certificates its own way
            return None
        return str(err.reason)
    except (OSError, ValueError, http.client.HTTPException) as err:  # timeouts, resets, a malformed HF_ENDPOINT
        return str(err) or type(err).__name__


def unreachable_reason(url: str | None = None, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when the hub at ``url`` (default: :func:`endpoint`) answers, else why not; never takes much over ``timeout``.

    The request runs in a daemon thread because a name lookup (DNS) is not bounded by socket timeouts.
    """
    url = url or endpoint()
    cached = _verdicts.get(url)
    if cached is not None and time.monotonic() - cached[0] < VERDICT_SECONDS:
        return cached[1]
    answers: list[str | None] = []
    probe = threading.Thread(target=lambda: answers.append(_ask(url, timeout)), name="hub-probe", daemon=True)
    probe.start()
    probe.join(timeout + 0.5)
    reason = answers[0] if answers else f"no answer within {timeout:g} s"
    _verdicts[url] = (time.monotonic(), reason)
    return reason


def require_hub(what: str, *, datasets: bool = False) -> None:
    """Raise :class:`HubUnreachableError` at once when ``what`` must come from the hub and the hub does not answer.

    Nothing is probed in offline mode (see the module docstring): the libraries then use their cache or fail at once.
    """
    if offline_mode(datasets):
        return
    reason = unreachable_reason()
    if reason is not None:
        raise HubUnreachableError(f"the Hugging Face hub ({endpoint()}) is not reachable to get {what}: {reason}")
