"""``hf:PATH_OR_ID``: transformers ``AutoModelForImageTextToText`` + ``AutoProcessor``, batched.

- Left padding with attention masks (the last position of every row is its own last prompt token).
- Greedy answer and option-letter probabilities in one ``generate`` call: the raw logits of the first
  generated position are the prefill's last-position logits.
- Letter probabilities: softmax over the whole vocabulary, summed over the token ids of ``A`` and `` A``
  (tokenisers differ), then renormalised over the item's letters.
- T samples at temperature tau: rows repeated T times, Gumbel-max noise seeded per (query, trial), so a
  sample does not depend on its batch (see ``eval/sampling.py``).
- bf16 on CUDA, float32 on CPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..sampling import GumbelSampler, row_seed
from .base import Backend, BackendError, Decoding, Query, Reply, renormalise


def _resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class HFBackend(Backend):
    gives_letter_probs = True

    def __init__(self, path: str, device: str = "auto", dtype: str | None = None,
                 processor_kwargs: dict[str, Any] | None = None) -> None:
        try:
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as e:
            raise BackendError(f"hf backend needs transformers (pip install 'medq-synth[eval]'): {e}") from None
        self.name = f"hf:{path}"
        self.device = _resolve(device)
        if dtype and not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise BackendError(f"unknown torch dtype {dtype!r} (e.g. bfloat16, float16, float32)")
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device.type == "cuda"
                                                           else torch.float32)
        try:
            self.processor = AutoProcessor.from_pretrained(path, **(processor_kwargs or {}))
            self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype).to(self.device).eval()
        except (OSError, ValueError, KeyError) as e:
            raise BackendError(f"cannot load {path!r} with transformers: {e}") from None
        self.tok = getattr(self.processor, "tokenizer", self.processor)
        self.tok.padding_side = "left"
        self.letter_ids = {c: self._letter_token_ids(c) for c in "ABCDE"}
        gen = self.model.generation_config
        eos = gen.eos_token_id[0] if isinstance(gen.eos_token_id, list) else gen.eos_token_id
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else eos

    def _letter_token_ids(self, letter: str) -> list[int]:
        ids = set()
        for variant in (letter, " " + letter):
            enc = self.tok.encode(variant, add_special_tokens=False)
            if len(enc) == 1:
                ids.add(enc[0])
        if not ids:
            raise BackendError(f"the tokenizer has no single token for option letter {letter!r}")
        return sorted(ids)

    def _inputs(self, queries: list[Query], repeat: int = 1) -> dict[str, torch.Tensor]:
        from PIL import Image

        texts, images = [], []
        for q in queries:
            content = [{"type": "image"} for _ in q.images] + [{"type": "text", "text": q.prompt}]
            text = self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True, tokenize=False)
            pics = [Image.fromarray(np.ascontiguousarray(im)).convert("RGB") for im in q.images]
            texts += [text] * repeat
            images += [pics] * repeat
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if any(images):
            if not all(images):
                raise BackendError("a batch mixes queries with and without images")
            kwargs["images"] = images
        inputs = self.processor(**kwargs).to(self.device)
        for k, v in inputs.items():
            if torch.is_floating_point(v):
                inputs[k] = v.to(self.model.dtype)
        return inputs

    def _generate(self, inputs: dict[str, torch.Tensor], max_new_tokens: int, processors: list | None = None):
        from transformers import GenerationConfig, LogitsProcessorList

        cfg = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=self.pad_id,
                               eos_token_id=self.model.generation_config.eos_token_id,
                               output_logits=True, return_dict_in_generate=True)
        with torch.inference_mode():
            return self.model.generate(**inputs, generation_config=cfg,
                                       logits_processor=LogitsProcessorList(processors or []))

    def _decode(self, sequences: torch.Tensor, prompt_len: int) -> list[str]:
        return [t.strip() for t in self.tok.batch_decode(sequences[:, prompt_len:], skip_special_tokens=True)]

    def letter_probs(self, first_logits: torch.Tensor, letters: str) -> dict[str, float] | None:
        p = torch.softmax(first_logits.float(), dim=-1).cpu()
        return renormalise({c: float(p[self.letter_ids[c]].sum()) for c in letters}, letters)

    def top_logprobs(self, first_logits: torch.Tensor, k: int = 20) -> list[tuple[str, float]]:
        """The k most likely first tokens with their log-probabilities over the whole vocabulary."""
        logp = torch.log_softmax(first_logits.float(), dim=-1).cpu()
        top = torch.topk(logp, min(k, logp.numel()))
        return [(self.tok.decode([int(t)]), float(v)) for v, t in zip(top.values, top.indices, strict=True)]

    def answer(self, queries: list[Query], decoding: Decoding) -> list[Reply]:
        inputs = self._inputs(queries)
        n_prompt = inputs["input_ids"].shape[1]
        out = self._generate(inputs, decoding.max_new_tokens)
        texts = self._decode(out.sequences, n_prompt)
        replies = []
        for i, q in enumerate(queries):
            probs = self.letter_probs(out.logits[0][i], q.letters) if decoding.letter_probs and q.letters else None
            replies.append(Reply(text=texts[i], letter_probs=probs,
                                 first_logprobs=self.top_logprobs(out.logits[0][i]) if decoding.letter_probs else None))
        if decoding.trials:
            t = decoding.trials
            inputs = self._inputs(queries, repeat=t)
            seeds = torch.tensor([row_seed(q.seed, k) for q in queries for k in range(t)], dtype=torch.int64)
            sampler = GumbelSampler(seeds, decoding.temperature, n_prompt)
            samples = self._decode(self._generate(inputs, decoding.max_new_tokens, [sampler]).sequences, n_prompt)
            for i, r in enumerate(replies):
                r.samples = samples[i * t: (i + 1) * t]
        return replies

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
