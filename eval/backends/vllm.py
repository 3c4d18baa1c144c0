"""``vllm:ID``: vLLM's offline ``LLM.generate`` with images (one continuously batched call per batch).

Written against vLLM's documented API (``LLM``, ``SamplingParams``, ``RequestOutput.outputs[i].text`` and
``.logprobs``: one ``{token_id: Logprob}`` dict per generated position). vLLM cannot be installed on the CI
machine; the tests drive this class through a fake ``vllm`` module with the same interface.

- Greedy answer: ``temperature=0``, ``logprobs=20``; the letter probabilities are the first position's top-20
  log-probabilities whose decoded token is a letter (``A`` or `` A``), renormalised over the item's letters
  (letters outside the top 20 get 0).
- Votes: ``n=T`` at the requested temperature with ``seed`` per request (from the query seed), so a sample
  does not depend on the batch. ``VLLM_BATCH_INVARIANT=1`` removes the remaining batch dependence of the
  logits on supported GPUs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Backend, BackendError, Decoding, Query, Reply, renormalise

TOP_LOGPROBS = 20


class VLLMBackend(Backend):
    gives_letter_probs = True

    def __init__(self, model: str, llm: Any = None, max_images: int = 2, **llm_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError as e:
            raise BackendError(f"vllm backend needs vLLM installed on a GPU node (pip install vllm): {e}") from None
        self.vllm = vllm
        self.name = f"vllm:{model}"
        if llm is None:
            try:
                llm = vllm.LLM(model=model, limit_mm_per_prompt={"image": max_images},
                               max_logprobs=TOP_LOGPROBS, **llm_kwargs)
            except Exception as e:  # vLLM raises many types at start-up (OOM, config, CUDA)
                raise BackendError(f"vLLM could not start {model!r}: {type(e).__name__}: {e}") from None
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()

    def _prompt(self, q: Query) -> dict[str, Any]:
        from PIL import Image

        content = [{"type": "image"} for _ in q.images] + [{"type": "text", "text": q.prompt}]
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                  add_generation_prompt=True)
        prompt: dict[str, Any] = {"prompt": text}
        if q.images:
            pics = [Image.fromarray(np.ascontiguousarray(im)).convert("RGB") for im in q.images]
            prompt["multi_modal_data"] = {"image": pics[0] if len(pics) == 1 else pics}
        return prompt

    @staticmethod
    def _letters_from_logprobs(first: dict[int, Any] | None, letters: str) -> dict[str, float] | None:
        if not first:
            return None
        mass = {c: 0.0 for c in letters}
        for lp in first.values():
            tok = (getattr(lp, "decoded_token", None) or "").strip().upper()
            if tok in mass:
                mass[tok] += math.exp(lp.logprob)
        return renormalise(mass, letters)

    def answer(self, queries: list[Query], decoding: Decoding) -> list[Reply]:
        sp = self.vllm.SamplingParams
        prompts = [self._prompt(q) for q in queries]
        greedy = sp(temperature=0.0, max_tokens=decoding.max_new_tokens,
                    logprobs=TOP_LOGPROBS if decoding.letter_probs else None)
        outs = self.llm.generate(prompts, greedy, use_tqdm=False)
        replies: list[Reply] = []
        for q, o in zip(queries, outs, strict=False):        # fewer outputs than prompts: the runner flags it
            if not o.outputs:
                replies.append(Reply(error="vLLM returned no completion"))
                continue
            c = o.outputs[0]
            probs = self._letters_from_logprobs(c.logprobs[0] if c.logprobs else None, q.letters) \
                if decoding.letter_probs and q.letters else None
            first = c.logprobs[0] if c.logprobs else None
            top = sorted(((getattr(lp, "decoded_token", None) or "", float(lp.logprob)) for lp in first.values()),
                         key=lambda t: -t[1]) if first else None
            replies.append(Reply(text=c.text.strip(), letter_probs=probs, first_logprobs=top))
        if decoding.trials and replies:
            params = [sp(n=decoding.trials, temperature=decoding.temperature, top_p=1.0, top_k=-1,
                         max_tokens=decoding.max_new_tokens, seed=q.seed & 0x7FFFFFFF) for q in queries]
            sampled = self.llm.generate(prompts, params, use_tqdm=False)
            for r, o in zip(replies, sampled, strict=False):
                r.samples = [c.text.strip() for c in o.outputs]
        return replies
