"""Model backends behind one interface: a batch of queries (images + prompt) in, one Reply per query out.

Specs: ``hf:PATH_OR_ID``, ``vllm:ID``, ``openai:MODEL@URL`` (URL of an OpenAI-compatible ``/v1``), and the
baselines ``cho`` (the channelized Hotelling observer, the default), ``observer`` (the classical blob
detector), ``random`` and ``majority``."""

from __future__ import annotations

from typing import Any

from .base import Backend, BackendError, Decoding, Query, Reply

__all__ = ["Backend", "BackendError", "Decoding", "Query", "Reply", "load_backend"]


def load_backend(spec: str, device: str = "auto", **options: Any) -> Backend:
    """The backend for a ``--model`` spec; raises BackendError with the reason when it cannot be built."""
    try:
        return _load(spec, device, **options)
    except TypeError as e:          # an option the backend does not take (e.g. --dtype for a baseline)
        raise BackendError(f"{spec}: unsupported option ({e})") from None


def _load(spec: str, device: str, **options: Any) -> Backend:
    kind, _, rest = spec.partition(":")
    if kind == "cho" and not rest:
        from .cho_reader import ChoObserver

        return ChoObserver(**options)
    if kind in ("observer", "random", "majority") and not rest:
        from .baselines import BASELINES

        return BASELINES[kind](**options)
    if kind == "hf" and rest:
        from .hf import HFBackend

        return HFBackend(rest, device=device, **options)
    if kind == "vllm" and rest:
        from .vllm import VLLMBackend

        return VLLMBackend(rest, **options)
    if kind == "openai" and rest:
        from .openai import OpenAIBackend

        model, sep, url = rest.partition("@")
        if not sep or not url:
            raise BackendError(f"openai spec needs MODEL@URL, e.g. openai:qwen@http://127.0.0.1:8000/v1, not {spec!r}")
        return OpenAIBackend(model, url, **options)
    raise BackendError(f"unknown model spec {spec!r}: use hf:PATH, vllm:ID, openai:MODEL@URL, "
                       "cho, observer, random or majority")
