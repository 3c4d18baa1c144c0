"""``openai:MODEL@URL``: any OpenAI-compatible chat-completions server (vLLM serve, SGLang, LMDeploy).

Images travel as PNG data URLs. Requests run concurrently (at most ``concurrency`` in flight); connection
errors, timeouts, HTTP 429 and 5xx are retried with exponential back-off, other 4xx are not. A query that
still fails becomes a Reply with ``error`` (recorded, retried on the next run), never a silent drop.
Letter probabilities come from ``logprobs`` / ``top_logprobs`` of the first token when the server returns
them; votes from ``n=T`` with a per-request ``seed``."""

from __future__ import annotations

import base64
import json
import math
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...display import png_bytes
from .base import Backend, Decoding, Query, Reply, renormalise

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class RequestFailed(Exception):
    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


def data_url(image) -> str:
    import numpy as np

    arr = np.asarray(image)
    chw = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    return "data:image/png;base64," + base64.b64encode(png_bytes(chw)).decode()


class OpenAIBackend(Backend):
    gives_letter_probs = True

    def __init__(self, model: str, url: str, concurrency: int = 8, retries: int = 3, timeout_s: float = 120.0,
                 backoff_s: float = 0.5, api_key: str | None = None) -> None:
        self.model = model
        self.url = url.rstrip("/") + "/chat/completions"
        self.name = f"openai:{model}@{url}"
        self.concurrency, self.retries, self.timeout_s, self.backoff_s = concurrency, retries, timeout_s, backoff_s
        self.api_key = api_key

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode(errors="replace")
            raise RequestFailed(f"HTTP {e.code} from {self.url}: {detail}", e.code in RETRY_STATUS) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise RequestFailed(f"cannot reach {self.url}: {reason}", True) from None
        try:
            data = json.loads(raw)
            if not isinstance(data.get("choices"), list):
                raise ValueError("no 'choices' list")
            return data
        except (ValueError, AttributeError) as e:
            raise RequestFailed(f"malformed response from {self.url}: {e}: {raw[:200]!r}", False) from None

    def _call(self, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            try:
                return self._post(body)
            except RequestFailed as e:
                if not e.retry or attempt == self.retries:
                    raise RequestFailed(f"{e} (after {attempt + 1} attempt(s))", False) from None
                time.sleep(self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    def _messages(self, q: Query) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": data_url(im)}} for im in q.images]
        content.append({"type": "text", "text": q.prompt})
        return [{"role": "user", "content": content}]

    @staticmethod
    def _letter_probs(choice: dict[str, Any], letters: str) -> dict[str, float] | None:
        content = ((choice.get("logprobs") or {}).get("content") or [])
        if not content:
            return None
        mass = {c: 0.0 for c in letters}
        for alt in content[0].get("top_logprobs") or [content[0]]:
            tok = str(alt.get("token", "")).strip().upper()
            if tok in mass and alt.get("logprob") is not None:
                mass[tok] += math.exp(float(alt["logprob"]))
        return renormalise(mass, letters)

    def _one(self, q: Query, decoding: Decoding) -> Reply:
        messages = self._messages(q)
        try:
            body = {"model": self.model, "messages": messages, "max_tokens": decoding.max_new_tokens,
                    "temperature": 0.0, "seed": q.seed & 0x7FFFFFFF}
            if decoding.letter_probs and q.letters:
                body.update(logprobs=True, top_logprobs=20)
            data = self._call(body)
            if not data["choices"]:
                return Reply(error=f"{self.url} returned no choices")
            choice = data["choices"][0]
            text = (choice.get("message") or {}).get("content")
            if not isinstance(text, str):
                return Reply(error=f"{self.url} returned a choice without message content")
            reply = Reply(text=text.strip(), letter_probs=self._letter_probs(choice, q.letters)
                          if decoding.letter_probs and q.letters else None)
            if decoding.trials:
                data = self._call({"model": self.model, "messages": messages, "n": decoding.trials,
                                   "temperature": decoding.temperature, "top_p": 1.0,
                                   "max_tokens": decoding.max_new_tokens, "seed": q.seed & 0x7FFFFFFF})
                reply.samples = [str((c.get("message") or {}).get("content") or "").strip() for c in data["choices"]]
            return reply
        except RequestFailed as e:
            return Reply(error=str(e))

    def answer(self, queries: list[Query], decoding: Decoding) -> list[Reply]:
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(queries)))) as pool:
            return list(pool.map(lambda q: self._one(q, decoding), queries))
