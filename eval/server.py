"""A minimal OpenAI-compatible chat-completions server around any backend (``medq-synth serve``).

For local checks and tests of the ``openai`` backend against a real HTTP round trip (for example serving a
tiny random model, or the observer); not a production server: one request at a time, no streaming.
``logprobs`` are the backend's real first-position log-probabilities (``Reply.first_logprobs``: the whole
vocabulary's top tokens for hf and vLLM, the letters for the baselines), or null when it has none."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from .backends import Backend, Decoding, Query


def _image(url: str) -> np.ndarray:
    from PIL import Image

    if not url.startswith("data:") or ";base64," not in url:
        raise ValueError("only base64 data URLs are accepted")
    raw = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def parse_request(body: dict[str, Any]) -> tuple[Query, Decoding, int]:
    """One chat-completions body -> (query, decoding, n)."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ValueError("'messages' must be a non-empty list")
    images, texts = [], []
    for m in msgs:
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for p in parts:
            if p.get("type") == "image_url":
                images.append(_image(p["image_url"]["url"]))
            elif p.get("type") == "text":
                texts.append(str(p.get("text", "")))
    n = int(body.get("n") or 1)
    temperature = float(body.get("temperature") or 0.0)
    sampled = temperature > 0
    decoding = Decoding(max_new_tokens=int(body.get("max_tokens") or 16), trials=n if sampled else 0,
                        temperature=temperature if sampled else 1.0, letter_probs=bool(body.get("logprobs")))
    seed = int(body.get("seed") or 0)
    return Query(key=f"req-{seed}", images=images, prompt="\n".join(texts), letters="ABCDE", seed=seed), decoding, n


def _choice(index: int, text: str, top: list[tuple[str, float]] | None, k: int) -> dict[str, Any]:
    """One choice; ``logprobs`` carries the backend's real first-position log-probabilities (the greedy token
    is the most likely one), or is null when the backend has none: nothing is made up."""
    choice: dict[str, Any] = {"index": index, "message": {"role": "assistant", "content": text},
                              "finish_reason": "stop", "logprobs": None}
    if top:
        alts = [{"token": t, "logprob": lp} for t, lp in top[:max(k, 1)]]
        choice["logprobs"] = {"content": [{"token": top[0][0], "logprob": top[0][1], "top_logprobs": alts}]}
    return choice


def make_server(backend: Backend, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    lock = threading.Lock()        # backends are not thread-safe: one model call at a time

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:   # quiet
            pass

        def _send(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": backend.name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                query, decoding, n = parse_request(body)
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, {"error": {"message": f"bad request: {e}"}})
                return
            with lock:
                reply = backend.answer([query], decoding)[0]
            if reply.error:
                self._send(500, {"error": {"message": reply.error}})
                return
            texts = reply.samples if decoding.trials else [reply.text or ""] * n
            k = int(body.get("top_logprobs") or 0)
            choices = [_choice(i, t, reply.first_logprobs if i == 0 and not decoding.trials and decoding.letter_probs
                               else None, k) for i, t in enumerate(texts)]
            self._send(200, {"id": f"cmpl-{query.seed}", "object": "chat.completion", "created": int(time.time()),
                             "model": body.get("model", backend.name), "choices": choices})

    return ThreadingHTTPServer((host, port), Handler)
