"""``openai:MODEL@URL``: any OpenAI-compatible chat-completions server (vLLM serve, SGLang, LMDeploy).

Requests go through the ``openai`` SDK, the API's reference client, rather than our own HTTP code: it
retries connection errors, timeouts, 408/409/429 and 5xx, honours ``Retry-After`` / ``retry-after-ms``
(up to a minute) and otherwise backs off exponentially with jitter, and pools connections. Other 4xx are
not retried. A query that still fails becomes a Reply with ``error`` (recorded, retried on the next run),
never a silent drop. Images travel as PNG data URLs; requests run concurrently (at most ``concurrency`` in
flight). Letter probabilities come from ``logprobs`` / ``top_logprobs`` of the first token when the server
returns them; votes from ``n=T`` with a per-request ``seed``."""

from __future__ import annotations

import base64
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...display import png_bytes
from .base import Backend, BackendError, Decoding, Query, Reply, renormalise


def data_url(image) -> str:
    import numpy as np

    arr = np.asarray(image)
    chw = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    return "data:image/png;base64," + base64.b64encode(png_bytes(chw)).decode()


class OpenAIBackend(Backend):
    gives_letter_probs = True

    def __init__(self, model: str, url: str, concurrency: int = 8, retries: int = 3, timeout_s: float = 120.0,
                 api_key: str | None = None) -> None:
        try:
            import openai
        except ImportError:
            raise BackendError("the openai backend needs the openai SDK: pip install 'medq-synth[eval]'") from None
        self.model = model
        self.url = url.rstrip("/")
        self.name = f"openai:{model}@{url}"
        self.concurrency, self.retries = concurrency, retries
        self._errors = openai
        # local servers take any key; the SDK insists on one
        self.client = openai.OpenAI(base_url=self.url, api_key=api_key or "EMPTY", max_retries=retries,
                                    timeout=timeout_s)

    def _call(self, **body: Any) -> Any:
        """One request (the SDK retries it); a failure raises ``RuntimeError`` with a one-line reason."""
        e = self._errors
        attempts = f"after {self.retries + 1} attempt(s)"
        try:
            resp = self.client.chat.completions.create(model=self.model, **body)
        except e.APIStatusError as err:
            retried = err.status_code in (408, 409, 429) or err.status_code >= 500
            raise RuntimeError(f"HTTP {err.status_code} from {self.url}: {str(err.message)[:300]} "
                               f"({attempts if retried else 'not retried'})") from None
        except e.APIConnectionError as err:            # includes timeouts
            raise RuntimeError(f"cannot reach {self.url}: {err} ({attempts})") from None
        except e.APIError as err:                      # an unparsable body, a response of the wrong shape
            raise RuntimeError(f"malformed response from {self.url}: {err}") from None
        if not isinstance(getattr(resp, "choices", None), list):
            raise RuntimeError(f"malformed response from {self.url}: no 'choices' list: {str(resp)[:200]!r}")
        return resp

    def _messages(self, q: Query) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": data_url(im)}} for im in q.images]
        content.append({"type": "text", "text": q.prompt})
        return [{"role": "user", "content": content}]

    @staticmethod
    def _letter_probs(choice: Any, letters: str) -> dict[str, float] | None:
        content = getattr(getattr(choice, "logprobs", None), "content", None) or []
        if not content:
            return None
        mass = {c: 0.0 for c in letters}
        for alt in content[0].top_logprobs or [content[0]]:
            tok = str(alt.token or "").strip().upper()
            if tok in mass and alt.logprob is not None:
                mass[tok] += math.exp(float(alt.logprob))
        return renormalise(mass, letters)

    def _one(self, q: Query, decoding: Decoding) -> Reply:
        messages = self._messages(q)
        seed = q.seed & 0x7FFFFFFF
        try:
            extra = {"logprobs": True, "top_logprobs": 20} if decoding.letter_probs and q.letters else {}
            resp = self._call(messages=messages, max_tokens=decoding.max_new_tokens, temperature=0.0, seed=seed,
                              **extra)
            if not resp.choices:
                return Reply(error=f"{self.url} returned no choices")
            choice = resp.choices[0]
            text = getattr(getattr(choice, "message", None), "content", None)
            if not isinstance(text, str):
                return Reply(error=f"{self.url} returned a choice without message content")
            reply = Reply(text=text.strip(), letter_probs=self._letter_probs(choice, q.letters) if extra else None)
            if decoding.trials:
                resp = self._call(messages=messages, n=decoding.trials, temperature=decoding.temperature,
                                  top_p=1.0, max_tokens=decoding.max_new_tokens, seed=seed)
                reply.samples = [str(getattr(c.message, "content", None) or "").strip() for c in resp.choices]
            return reply
        except RuntimeError as err:
            return Reply(error=str(err))

    def answer(self, queries: list[Query], decoding: Decoding) -> list[Reply]:
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(queries)))) as pool:
            return list(pool.map(lambda q: self._one(q, decoding), queries))

    def close(self) -> None:
        self.client.close()
