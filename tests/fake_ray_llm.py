"""A stand-in for ``ray.data.llm.build_processor`` with a vLLM config, for machines without vLLM.

It honours the documented processor interface: ``build_processor(config, preprocess, postprocess)``
returns a callable that maps a Dataset through ``preprocess`` (which must yield ``messages`` in OpenAI chat
format and ``sampling_params``), the engine, and ``postprocess``; every column is carried to postprocess;
the engine adds vLLM's output columns (``generated_text``, ``generated_tokens``, ``num_generated_tokens``,
``logprobs``: one ``{token_id: {"logprob", "rank", "decoded_token"}}`` dict per generated position) and
``__inference_error__`` (empty, or the error of a failed row, which then bypasses postprocess, as with
``should_continue_on_error=True``). Its "model" reads the image: the answer is A when the image's mean
grey level is above 100, else B, with fixed first-position log-probabilities."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

# first-position distribution of the fake model (decoded tokens as a tokenizer writes them)
BRIGHT = {"A": 0.6, " B": 0.25, "C": 0.1, "the": 0.05}
DARK = {"B": 0.7, "A": 0.2, " D": 0.1}


def _image(url: str) -> np.ndarray:
    from PIL import Image

    assert url.startswith("data:image/png;base64,"), url[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("L"))


def engine(fail_key: str | None, row: dict[str, Any]) -> dict[str, Any]:
    sp, messages = row["sampling_params"], row["messages"]
    assert isinstance(messages, list) and messages[0]["role"] == "user", messages
    content = messages[0]["content"]
    images = [_image(c["image_url"]["url"]) for c in content if isinstance(c, dict) and c.get("type") == "image_url"]
    text = " ".join(c["text"] for c in content if isinstance(c, dict) and c.get("type") == "text") \
        if isinstance(content, list) else str(content)
    out = {**row, "generated_text": "", "generated_tokens": [], "num_generated_tokens": 0, "logprobs": None,
           "__inference_error__": ""}
    if fail_key and fail_key in text:
        out["__inference_error__"] = "RuntimeError: the fake engine failed on this prompt"
        return out
    dist = BRIGHT if images and float(np.mean(images[0])) > 100 else DARK
    ranked = sorted(dist.items(), key=lambda t: -t[1])
    first = {100 + i: {"logprob": math.log(p), "rank": i + 1, "decoded_token": tok}
             for i, (tok, p) in enumerate(ranked)}
    want = sp.get("logprobs")
    answer = ranked[0][0].strip()
    out.update(generated_text=answer, generated_tokens=[100], num_generated_tokens=1,
               logprobs=[dict(list(first.items())[:want])] if want else None)
    return out


class FakeProcessor:
    def __init__(self, config: Any, preprocess, postprocess, fail_key: str | None) -> None:
        self.config, self.preprocess, self.postprocess, self.fail_key = config, preprocess, postprocess, fail_key

    def __call__(self, ds):
        import functools

        ds = ds.map(self.preprocess).map(functools.partial(engine, self.fail_key))
        post = self.postprocess

        def finish(row: dict[str, Any]) -> dict[str, Any]:
            return row if row["__inference_error__"] else {**post(row), "__inference_error__": ""}

        return ds.map(finish)


def installer(fail_key: str | None, calls: list):
    """A ``build_processor`` replacement that records its config and checks it is a vLLM one."""
    def build_processor(config, preprocess=None, postprocess=None, **_kwargs):
        from ray.data.llm import vLLMEngineProcessorConfig

        assert isinstance(config, vLLMEngineProcessorConfig)
        calls.append(config)
        return FakeProcessor(config, preprocess, postprocess, fail_key)

    return build_processor
