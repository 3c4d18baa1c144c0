"""Baselines that need no weights: ``random``, ``majority`` and ``observer``.

The observer is a classical image-based reader for the phantom questions (lesion presence in a quadrant,
lesion count, side of the largest lesion). It sees only the displayed image and the question, never the
lesion list. Its statistic is a local contrast-to-noise ratio at three lesion scales,
|mean(disc) - mean(surround)| / std(surround), inside the eroded body outline. A straight edge cannot push
that ratio much above 1.33, whereas a compact blob in homogeneous tissue can, so 1.4 separates lesions from
anatomy on the phantoms (tuned on phantom indices 100-123, outside the default set). It is not an ideal
observer: it finds the MRI and ultrasound lesions well and misses most low-contrast CT lesions and X-ray
nodules, and its accuracy falls as degradations blur, shift or bury them in noise."""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import numpy as np

from .base import Backend, Decoding, Query, Reply

THRESHOLD = 1.4
SCALES_PX = (3.0, 5.0, 8.0)      # lesion radii at 256 px (the phantoms' 3-14 px range)


def _unit(key: str, salt: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{salt}\0{key}".encode()).digest()[:8], "big") / 2.0 ** 64


def letter_reply(letter: str, probs: dict[str, float], decoding: Decoding, key: str) -> Reply:
    samples = []
    if decoding.trials:       # votes drawn from the same distribution, seeded by the query key
        letters, p = zip(*sorted(probs.items()), strict=True)
        cdf = np.cumsum(p)
        samples = [letters[min(int(np.searchsorted(cdf, _unit(key, f"trial{t}"))), len(letters) - 1)]
                   for t in range(decoding.trials)]
    # a baseline's whole output distribution is over the letters: these are its real log-probabilities
    top = sorted(((c, math.log(p)) for c, p in probs.items() if p > 0), key=lambda t: -t[1])
    return Reply(text=letter, samples=samples, letter_probs=probs if decoding.letter_probs else None,
                 first_logprobs=top if decoding.letter_probs else None)


class RandomBaseline(Backend):
    """Uniform over the item's options; the pick is a hash of the query key (deterministic)."""

    name = "random"
    gives_letter_probs = True
    thread_safe = True                  # a pure function of the query

    def answer(self, queries: list[Query], decoding: Decoding) -> list[Reply]:
        out = []
        for q in queries:
            letters = q.letters or "AB"
            pick = letters[int(_unit(q.key, "random") * len(letters))]
            out.append(letter_reply(pick, {c: 1.0 / len(letters) for c in letters}, decoding, q.key))
        return out


class MajorityBaseline(Backend):
    """The gold letter most often correct among evaluated items with the same option letters (ties: the
    first letter), with those frequencies as its probabilities: the accuracy a model gets from answer
    priors alone."""

    name = "majority"
    gives_letter_probs = True
    needs_prior = True
    thread_safe = True                  # reads the prior fitted before any answer

    def __init__(self) -> None:
        self.prior: dict[str, Counter] = {}

    def fit(self, answers: list[tuple[str, str | None]]) -> None:
        for letters, gold in answers:
            if gold:
                self.prior.setdefault(letters, Counter())[gold] += 1

    def answer(self, queries: list[Query], decoding: Decoding) -> list[Reply]:
        out = []
        for q in queries:
            counts = self.prior.get(q.letters, Counter())
            total = sum(counts[c] for c in q.letters)
            probs = {c: (counts[c] / total if total else 1.0 / len(q.letters)) for c in q.letters}
            best = max(q.letters, key=lambda c: (counts[c], -q.letters.index(c)))
            out.append(letter_reply(best, probs, decoding, q.key))
        return out


def contrast_map(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best local contrast-to-noise ratio over SCALES_PX and the radius (px) that gave it, for a display
    image ``v`` in [0, 1]; zero outside the body eroded by the largest lesion size."""
    from scipy import ndimage as ndi

    k = max(v.shape) / 256.0
    best = np.zeros_like(v)
    radius = np.zeros_like(v)
    for r in SCALES_PX:
        r = r * k
        inner = ndi.gaussian_filter(v, r / 2)
        outer = ndi.gaussian_filter(v, 2 * r)
        var = np.clip(ndi.gaussian_filter(v * v, 2 * r) - outer ** 2, 0, None)
        s = np.abs(inner - outer) / np.sqrt(var + 0.02 ** 2)   # 0.02: a floor for flat (noise-free) regions
        radius = np.where(s > best, r, radius)
        best = np.maximum(best, s)
    body = ndi.binary_erosion(ndi.binary_fill_holes(v > 0.05), iterations=max(1, round(12 * k)))
    return best * body, radius


def detect(v: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Candidate lesions (col, row, strength, radius px), strongest first."""
    from skimage.feature import peak_local_max

    strength, radius = contrast_map(v)
    k = max(v.shape) / 256.0
    peaks = peak_local_max(strength, min_distance=max(1, round(5 * k)), threshold_abs=1e-6,
                           exclude_border=max(1, round(6 * k)))
    found = [(float(c) + 0.5, float(r) + 0.5, float(strength[r, c]), float(radius[r, c])) for r, c in peaks]
    return sorted(found, key=lambda t: -t[2])


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class ImageReader(Backend):
    """A baseline that reads the image of a multiple-choice question: ``_read`` gives its letter
    probabilities and the decision statistics behind them (or None), or the reason it abstains."""

    gives_letter_probs = True
    thread_safe = True                  # a read depends only on the query (and read-only trained state)

    def _read(self, q: Query) -> tuple[dict[str, float], dict | None] | str:
        raise NotImplementedError

    def answer(self, queries: list[Query], decoding: Decoding) -> list[Reply]:
        out = []
        for q in queries:
            if not q.letters or not q.images:
                out.append(Reply(error=f"{self.name} answers multiple-choice questions about one image only"))
                continue
            got = self._read(q)
            if isinstance(got, str):
                out.append(Reply(abstain=got))
                continue
            probs, stats = got
            best = max(q.letters, key=lambda c: (probs[c], -q.letters.index(c)))
            reply = letter_reply(best, probs, decoding, q.key)
            reply.statistics = stats
            out.append(reply)
        return out


class Observer(ImageReader):
    """Classical reader of the phantom questions (``meta['task']``: lesion_presence / lesion_count /
    lesion_side). It abstains (no answer, recorded with the reason) on any other question, and on a side
    question when it finds no lesion: a uniform guess with a tie-break would report "always A" as accuracy."""

    name = "observer"

    def _probs(self, q: Query) -> dict[str, float] | str:
        """Letter probabilities, or the reason the observer cannot answer."""
        letters = q.letters
        task = q.meta.get("task")
        img = q.images[0].astype(np.float64).mean(axis=-1) / 255.0
        h, w = img.shape
        found = detect(img) if task in ("lesion_presence", "lesion_count", "lesion_side") else []
        hits = [f for f in found if f[2] >= THRESHOLD]
        if task == "lesion_count" and letters == "ABCD":
            n = min(len(hits), 3)
            weights = np.exp(-2.0 * np.abs(np.arange(4) - n))
            return dict(zip(letters, weights / weights.sum(), strict=True))
        if task == "lesion_presence" and letters == "AB" and q.meta.get("region"):
            quad = q.meta["region"]
            right, lower = quad.endswith("right"), quad.startswith("lower")
            inside = [f[2] for f in found if (f[0] >= w / 2) == right and (f[1] >= h / 2) == lower]
            p_yes = _sigmoid((max(inside, default=0.0) - THRESHOLD) / 0.05)
            return {"A": p_yes, "B": 1.0 - p_yes}
        if task == "lesion_side" and letters == "AB" and hits:
            big = max(hits, key=lambda f: (f[3], f[2]))
            p_left = _sigmoid((w / 2 - big[0]) / (0.05 * w))
            return {"A": p_left, "B": 1.0 - p_left}
        if task == "lesion_side" and letters == "AB":
            return "no lesion found: the side cannot be read"
        return (f"not a question the observer reads (task {task!r}, options {letters}; it reads the phantoms' "
                "lesion presence, count and side questions)")

    def _read(self, q: Query) -> tuple[dict[str, float], dict | None] | str:
        probs = self._probs(q)
        return probs if isinstance(probs, str) else (probs, None)


BASELINES = {"random": RandomBaseline, "majority": MajorityBaseline, "observer": Observer}
