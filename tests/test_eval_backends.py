"""Backends: tiny random hf models, the vLLM path through a fake module, the openai path over real HTTP."""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medq_synth.eval.backends import Backend, BackendError, Decoding, Query, Reply, load_backend
from medq_synth.eval.backends.openai import data_url
from medq_synth.eval.sampling import gumbel, hash_uniform

from . import tiny_vlm

KINDS = ("qwen2_vl", "llava", "idefics3")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Only the tests that build a model need transformers; the rest of the module runs without it."""
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("tiny_models")
    return {k: tiny_vlm.build(k, root / k) for k in KINDS}


def _queries(n: int = 4) -> list[Query]:
    rng = np.random.default_rng(0)
    letters = ["AB", "ABCD", "ABC", "ABCDE"]
    return [Query(key=f"q{i}", images=[rng.integers(0, 256, (40 + 12 * i, 64 - 6 * i, 3), dtype=np.uint8)],
                  prompt=f"Is there a focal lesion in this image ? {' '.join(letters[i % 4])}", letters=letters[i % 4],
                  seed=1000 + i) for i in range(n)]


@pytest.mark.parametrize("kind", KINDS)
def test_hf_batched_matches_single(tiny_models, kind):
    b = load_backend(f"hf:{tiny_models[kind]}", device="cpu")
    qs = _queries()
    batched = b.answer(qs, Decoding(trials=3, max_new_tokens=4))
    for q, r in zip(qs, batched, strict=True):
        one = b.answer([q], Decoding(trials=3, max_new_tokens=4))[0]
        assert set(r.letter_probs) == set(q.letters)
        assert sum(r.letter_probs.values()) == pytest.approx(1.0, abs=1e-6)
        assert max(abs(r.letter_probs[c] - one.letter_probs[c]) for c in q.letters) < 1e-5
        assert r.text == one.text
        assert r.samples == one.samples and len(r.samples) == 3     # Gumbel noise seeded per query and trial


def test_hf_forced_answer_and_load_errors(tiny_models):
    b = load_backend(f"hf:{tiny_models['qwen2_vl']}", device="cpu")
    tiny_vlm.force_letter(b, "C")
    r = b.answer(_queries(3), Decoding(trials=2, max_new_tokens=2))
    assert [x.text.split()[0] for x in r] == ["C", "C", "C"]
    assert r[1].letter_probs["C"] > 0.999 and r[0].letter_probs is not None   # C is not an option of q0: AB only
    with pytest.raises(BackendError, match="cannot load"):
        load_backend("hf:/nonexistent/model", device="cpu")
    with pytest.raises(BackendError, match="unknown model spec"):
        load_backend("gpt:foo")


def test_gumbel_noise_samples_the_softmax():
    """argmax(l / tau + G) with the hashed noise reproduces softmax(l / tau) frequencies."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    for tau in (1.0, 0.5):
        seeds = torch.arange(20000, dtype=torch.int64) * 7919 + 13
        picks = torch.argmax(logits[None] / tau + gumbel(seeds, 0, 4).float(), dim=1)
        freq = torch.bincount(picks, minlength=4).double() / len(seeds)
        p = torch.softmax(logits.double() / tau, 0)
        assert torch.all((freq - p).abs() < 5 * torch.sqrt(p * (1 - p) / len(seeds)) + 1e-4)
    u = hash_uniform(torch.tensor([5, 6]), 3, 1000)
    assert torch.equal(u, hash_uniform(torch.tensor([5, 6]), 3, 1000)) and 0 < float(u.min()) and float(u.max()) < 1
    assert not torch.equal(u[0], u[1]) and not torch.equal(u, hash_uniform(torch.tensor([5, 6]), 4, 1000))


# -- vLLM through a fake module with vLLM's interface -------------------------------------------------------
class _Logprob:
    def __init__(self, logprob: float, token: str) -> None:
        self.logprob, self.rank, self.decoded_token = logprob, 1, token


class _FakeLLM:
    """Answers 'B' with p(B) = 0.7, p(A) = 0.2 in its top log-probabilities; drops the last request when
    ``drop`` is set (a backend returning fewer answers than asked)."""

    def __init__(self, drop: bool = False) -> None:
        self.drop, self.calls, self.seen = drop, [], {}

    def get_tokenizer(self):
        tok = types.SimpleNamespace()
        tok.apply_chat_template = (lambda msgs, tokenize, add_generation_prompt:
                                   "<user>" + msgs[0]["content"][-1]["text"])
        return tok

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append((prompts, params))
        outs = []
        plist = params if isinstance(params, list) else [params] * len(prompts)
        for p, sp in zip(prompts, plist, strict=True):
            img = p["multi_modal_data"]["image"]          # vLLM takes PIL images
            assert isinstance(img, Image.Image) and img.mode == "RGB" and p["prompt"].startswith("<user>")
            self.seen[p["prompt"]] = np.asarray(img)
            n = sp.kwargs.get("n", 1)
            lp = [{1: _Logprob(np.log(0.7), " B"), 2: _Logprob(np.log(0.2), "A"), 3: _Logprob(np.log(0.1), "The")}]
            comps = [types.SimpleNamespace(text=" B", logprobs=lp if sp.kwargs.get("logprobs") else None)
                     for _ in range(n)]
            outs.append(types.SimpleNamespace(outputs=comps))
        return outs[:-1] if self.drop else outs


class _SamplingParams:
    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.SamplingParams = _SamplingParams
    mod.LLM = lambda **kw: _FakeLLM()
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return mod


def test_vllm_backend_through_fake(fake_vllm):
    b = load_backend("vllm:some/model")
    qs = _queries(2)
    r = b.answer(qs, Decoding(trials=3))
    assert r[0].letter_probs == pytest.approx({"A": 0.2 / 0.9, "B": 0.7 / 0.9})
    assert r[1].letter_probs["C"] == 0.0 and r[1].letter_probs["B"] == pytest.approx(0.7 / 0.9)
    assert r[0].text == "B" and r[0].samples == ["B", "B", "B"]
    greedy, sampled = b.llm.calls
    assert greedy[1].kwargs["temperature"] == 0.0 and greedy[1].kwargs["logprobs"] == 20
    seeds = [sp.kwargs["seed"] for sp in sampled[1]]
    assert [sp.kwargs["n"] for sp in sampled[1]] == [3, 3] and seeds == [q.seed & 0x7FFFFFFF for q in qs]
    for q in qs:                                            # the query's pixels reach vLLM unchanged
        assert np.array_equal(b.llm.seen["<user>" + q.prompt], q.images[0])
    assert [t for t, _ in r[0].first_logprobs] == [" B", "A", "The"]       # its real top log-probabilities


def test_vllm_fewer_outputs_are_flagged_not_dropped(fake_vllm, tmp_path):
    from medq_synth.eval.backends.vllm import VLLMBackend
    from medq_synth.eval.records import Sample, Setting
    from medq_synth.eval.runner import evaluate
    from medq_synth.eval.store import Store

    b = VLLMBackend("m", llm=_FakeLLM(drop=True))
    img = np.zeros((32, 32, 3), np.uint8)
    samples = [Sample(f"s{i}", f"s{i}", [img], "q?", {"A": "x", "B": "y"}, "B", {"level": 0}) for i in range(3)]
    store = Store(tmp_path)
    stats = evaluate([samples], b, Setting("vllm:m", "vllm:m", "medq-deg", Decoding()), store, batch_size=3,
                     progress=False)
    assert stats.answered == 2 and stats.failed == 1
    assert [e["item"] for e in store.errors()] == ["s2"] and "2 replies for 3 queries" in store.errors()[0]["reason"]
    assert all(r["correct"] for r in store.records.values())


def test_hf_processor_options_cap_image_tokens(tiny_models):
    big = Query("k", [np.zeros((200, 200, 3), np.uint8)], "Is A ?", "AB")
    default = load_backend(f"hf:{tiny_models['qwen2_vl']}", device="cpu")
    capped = load_backend(f"hf:{tiny_models['qwen2_vl']}", device="cpu",
                          processor_kwargs={"size": {"shortest_edge": 56 * 56, "longest_edge": 56 * 56}})
    assert default._inputs([big])["image_grid_thw"].tolist() == [[1, 8, 8]]       # the folder's 16-token cap
    assert capped._inputs([big])["image_grid_thw"].tolist() == [[1, 4, 4]]
    with pytest.raises(BackendError, match="unsupported option"):
        load_backend("observer", dtype="float16")


def test_hf_text_only_queries(tiny_models):
    """The judge path: no image at all."""
    b = load_backend(f"hf:{tiny_models['qwen2_vl']}", device="cpu")
    r = b.answer([Query("j1", [], "Score : 2 ?"), Query("j2", [], "Answer with the option letter")],
                 Decoding(max_new_tokens=3, letter_probs=False))
    assert all(isinstance(x.text, str) and x.letter_probs is None for x in r)


def test_runner_flags_fewer_replies_than_queries(tmp_path):
    from medq_synth.eval.records import Sample, Setting
    from medq_synth.eval.runner import evaluate
    from medq_synth.eval.store import Store

    class Short:
        name, needs_prior = "short", False

        def answer(self, queries, decoding):
            return [Reply(text="A", samples=["A"]) for _ in queries[:-1]]      # one missing, one sample short

    img = np.zeros((32, 32, 3), np.uint8)
    samples = [Sample(f"s{i}", f"s{i}", [img], "q?", {"A": "x", "B": "y"}, "A", {"level": 0}) for i in range(3)]
    setting = Setting("short", "short", "medq-deg", Decoding(trials=2))
    store = Store(tmp_path)
    stats = evaluate([samples], Short(), setting, store, batch_size=3, progress=False)
    assert stats.answered == 0 and stats.failed == 3
    reasons = sorted(e["reason"] for e in store.errors())
    assert reasons[0].startswith("the backend returned 1 of 2 samples") and "2 replies for 3 queries" in reasons[-1]


# -- openai over real HTTP -----------------------------------------------------------------------------------
@pytest.fixture
def served(tiny_models):
    from medq_synth.eval.server import make_server

    backend = load_backend(f"hf:{tiny_models['llava']}", device="cpu")
    server = make_server(backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield backend, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_backend_against_served_tiny_model(served):
    direct, url = served
    b = load_backend(f"openai:tiny@{url}")
    qs = _queries(3)
    over_http = b.answer(qs, Decoding(trials=2, max_new_tokens=4))
    local = direct.answer(qs, Decoding(max_new_tokens=4))
    for q, h, d in zip(qs, over_http, local, strict=True):
        assert h.error is None and h.text == d.text and len(h.samples) == 2
        # PNG data URLs are lossless: the served top-20 are the model's own log-probabilities, and the letter
        # probabilities over HTTP are the letters' share of them (all an OpenAI-style server can give)
        assert d.first_logprobs and len(d.first_logprobs) == 20
        mass = {c: sum(math.exp(lp) for t, lp in d.first_logprobs if t.strip().upper() == c) for c in q.letters}
        if sum(mass.values()) > 0:
            assert max(abs(h.letter_probs[c] - mass[c] / sum(mass.values())) for c in q.letters) < 1e-5
        else:
            assert h.letter_probs is None


def test_served_logprobs_are_real_or_absent():
    """`serve` returns the backend's own log-probabilities (the observer's letter distribution; the greedy
    token is the most likely), and null for a backend that has none - never a made-up 0.0."""
    import json
    import urllib.request

    from medq_synth.eval.server import make_server

    class NoLogprobs(Backend):
        name = "plain"

        def answer(self, queries, decoding):
            return [Reply(text="B") for _ in queries]

    def post(backend) -> dict:
        server = make_server(backend)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        img = data_url(np.full((64, 64, 3), 40, np.uint8))
        body = {"model": "m", "logprobs": True, "top_logprobs": 5, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": img}}, {"type": "text", "text": "Which? A. x B. y"}]}]}
        req = urllib.request.Request(f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())["choices"][0]
        finally:
            server.shutdown()
            server.server_close()

    choice = post(load_backend("random"))
    first = choice["logprobs"]["content"][0]
    assert first["logprob"] == pytest.approx(math.log(1 / 5)) and first["token"] in "ABCDE"
    assert sorted(t["token"] for t in first["top_logprobs"]) == list("ABCDE")
    assert post(NoLogprobs())["logprobs"] is None


@contextlib.contextmanager
def _scripted_http(respond):
    """A local HTTP server whose n-th POST (from 1) gets ``respond(n)`` = (status, body, headers); yields its
    /v1 base URL."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            hits["n"] += 1
            self.rfile.read(int(self.headers["Content-Length"]))
            code, body, headers = respond(hits["n"])
            self.send_response(code)
            for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()


def test_openai_unreachable_and_garbage_servers():
    import socket

    with socket.socket() as s:                       # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    b = load_backend(f"openai:m@http://127.0.0.1:{dead}/v1", retries=2)
    r = b.answer(_queries(1), Decoding())[0]
    assert r.error and "cannot reach" in r.error and "after 3 attempt(s)" in r.error

    seen = []

    def respond(n):
        seen.append(n)
        if n == 1:
            return 503, b'{"error": "busy"}', {}                                       # retried
        if n == 2:
            return 200, b'{"choices": [{"message": {"content": "The answer is B"}}]}', {}
        return 200, b"<html>not json</html>", {"Content-Type": "text/html"}            # malformed: not retried

    with _scripted_http(respond) as url:
        b = load_backend(f"openai:m@{url}", concurrency=1)
        first, second = b.answer(_queries(1), Decoding()), b.answer(_queries(1), Decoding())
        assert first[0].text == "The answer is B" and first[0].letter_probs is None and len(seen) == 3
        assert second[0].error and "malformed response" in second[0].error


def test_openai_backend_honours_retry_after():
    """A 429 with Retry-After: 2 is retried after two seconds (the SDK's back-off alone would wait ~0.5 s)."""
    import time

    stamps: list[float] = []

    def respond(n):
        stamps.append(time.monotonic())
        if n == 1:
            return 429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "2"}
        return 200, b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "C"}}]}', {}

    with _scripted_http(respond) as url:
        r = load_backend(f"openai:m@{url}", concurrency=1).answer(_queries(1), Decoding(letter_probs=False))[0]
    assert r.error is None and r.text == "C" and len(stamps) == 2
    assert stamps[1] - stamps[0] >= 1.9
