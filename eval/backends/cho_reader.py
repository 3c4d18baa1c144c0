"""``cho``: a scanning channelized Hotelling observer that reads the phantom questions (the default model).

What it is (Barrett & Myers ch. 13-14; the scanning form of Gifford et al. 2016): for each phantom modality
and lesion polarity, a CHO with Laguerre-Gauss channels (``eval/cho.py``) is trained on the displayed L0
images of training phantoms (indices ``TRAIN_FIRST`` on, disjoint from the evaluated ones): signal-present
samples are the channel outputs centred on the true lesions, signal-absent ones are outputs at lesion-free
positions, drawn at random and, in a second round, where the first template responded most (hard negatives:
organ edges, the aorta, bone), so that the Hotelling covariance learns the anatomy it must ignore.

Reading an image, the template is applied at every pixel (the channels are shift-invariant, so the statistic
map is one convolution per channel), standardised under "absent", and searched inside the region where
training lesions occurred (a location-known-statistically prior, learned from the training phantoms). The
questions are answered from the statistic's distributions under each hypothesis, fitted on the training
phantoms:
- presence in a quadrant: the quadrant's maximum statistic; P(yes) from Gaussian fits of that maximum on
  occupied and empty training quadrants (equal priors);
- count: local maxima of the map are candidates, each with P(lesion | statistic) from the fitted statistics
  of true and false peaks; the count's distribution is the Poisson-binomial of those probabilities, with
  "3" taking the tail;
- side of the largest lesion: each candidate's radius is read from its own disc-minus-ring contrast profile;
  P(candidate i is the largest lesion) = p_i times the probability that no larger candidate is a lesion.

So its letter probabilities come from the statistic, and its confidence is the observer's. It sees only the
displayed image and the question; the lesion list never reaches it. Questions that are not the phantoms'
lesion questions, or images of a modality it was not trained for, are abstained on, with the reason.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medq_synth.sources.phantoms import QUADRANTS, quadrant_of

from ..cho import CHO, gaussian_posterior
from .base import Query
from .baselines import ImageReader

TRAIN_FIRST = 1000           # training phantoms: indices 1000 .. 1000 + n_train - 1 (evaluated sets use 0 ..)
N_TRAIN = 48                 # per modality
SEARCH_PRIOR_PHANTOMS = 400  # phantoms whose lesion centres define the search region (no rendering needed)
SEARCH_RADIUS_PX = 6.0       # around each training lesion centre
CHANNELS = 6
HARD_NEGATIVES = 12          # per training image, second round
MIN_PEAK_DISTANCE_PX = 5
CANDIDATES = 6               # strongest local maxima read per image (the count runs to 3)


@dataclass
class ModalitySpec:
    width_px: float                      # Laguerre-Gauss width a (px at 256)
    polarity: dict[str, int]             # lesion kind -> sign of its contrast in the display


SPECS: dict[str, ModalitySpec] = {
    "ct": ModalitySpec(12.0, {"hypodense": -1, "hyperdense": 1}),
    "mri": ModalitySpec(9.0, {"hyperintense": 1}),
    "ultrasound": ModalitySpec(16.0, {"cyst": -1, "hyperechoic": 1}),
    "xray": ModalitySpec(11.0, {"nodule": 1}),
}


def grey(img: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W)`` or ``(H, W, 3)`` display -> float luminance in [0, 1]."""
    g = np.asarray(img, np.float64)
    return (g.mean(axis=-1) if g.ndim == 3 else g) / 255.0


def l0_display(item) -> np.ndarray:
    """An item's L0 display exactly as the engine renders it (window -> [0, 1] -> rounded uint8), grey."""
    lo, hi = item.window
    v = np.clip((item.image[0].astype(np.float32) - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)
    return np.round(v * 255.0) / 255.0


def _channel_maps(g: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """``(J, H, W)``: each LG channel's output centred at every pixel (zero padding outside the image)."""
    from scipy.signal import fftconvolve

    return np.stack([fftconvolve(g, k, mode="same") for k in kernels])


def _peaks(z: np.ndarray, mask: np.ndarray, min_distance: int) -> list[tuple[int, int]]:
    from skimage.feature import peak_local_max

    if not mask.any():
        return []
    pk = peak_local_max(z, min_distance=min_distance, threshold_abs=None, exclude_border=False,
                        labels=mask.astype(np.int32))        # maxima inside the mask only
    return [(int(r), int(c)) for r, c in pk]


@dataclass
class Fit:
    """Gaussian fits of a statistic under two hypotheses, with the prior of the second."""
    m0: float
    v0: float
    m1: float
    v1: float
    prior1: float = 0.5

    @classmethod
    def of(cls, t0: list[float], t1: list[float], prior1: float = 0.5) -> Fit:
        a, b = np.asarray(t0, np.float64), np.asarray(t1, np.float64)
        floor = 1e-6
        return cls(float(a.mean()), max(float(a.var(ddof=1)), floor), float(b.mean()), max(float(b.var(ddof=1)),
                   floor), prior1)

    def posterior(self, t: np.ndarray | float) -> np.ndarray:
        return gaussian_posterior(t, self.m0, self.v0, self.m1, self.v1, self.prior1)


@dataclass
class ModalityReader:
    """A trained reader of one phantom modality."""
    modality: str
    kernels: np.ndarray                          # (J, k, k) LG channels
    observers: dict[int, CHO]                    # polarity sign -> CHO
    norm: dict[int, tuple[float, float]]         # polarity -> mean, std of the statistic on absent samples
    search: np.ndarray                           # bool (256, 256) search region
    quadrant: dict[str, Fit] = field(default_factory=dict)     # per quadrant: its maximum statistic
    peak: Fit = field(default_factory=lambda: Fit(0, 1, 1, 1))
    training: dict[str, Any] = field(default_factory=dict)

    def z_map(self, g: np.ndarray) -> np.ndarray:
        """The standardised statistic at every pixel (max over polarities)."""
        maps = _channel_maps(g, self.kernels)
        z = np.full(g.shape, -np.inf)
        for sign, obs in self.observers.items():
            m, s = self.norm[sign]
            t = sum(float(wj) * mj for wj, mj in zip(obs.w, maps, strict=True))   # elementwise: thread-invariant
            z = np.maximum(z, (t - m) / s)
        return z

    def search_mask(self, shape: tuple[int, int]) -> np.ndarray:
        if shape == self.search.shape:
            return self.search
        from skimage.transform import resize

        return resize(self.search.astype(float), shape, order=0, anti_aliasing=False) > 0.5

    def candidates(self, g: np.ndarray, z: np.ndarray | None = None) -> list[tuple[int, int, float]]:
        """(row, col, statistic) of the map's local maxima in the search region, strongest first."""
        z = self.z_map(g) if z is None else z
        k = max(g.shape) / 256.0
        pk = _peaks(z, self.search_mask(g.shape), max(1, round(MIN_PEAK_DISTANCE_PX * k)))
        return sorted(((r, c, float(z[r, c])) for r, c in pk), key=lambda t: -t[2])[:CANDIDATES]


def radius_estimate(g: np.ndarray, row: int, col: int, radii: np.ndarray) -> float:
    """The radius (px) whose disc-minus-ring contrast |mean(disc r) - mean(ring r..1.5 r)| is largest at a
    candidate: for a uniform disc of radius R that contrast peaks at r = R, whatever the disc's contrast."""
    h, w = g.shape
    rmax = int(math.ceil(1.5 * radii.max())) + 1
    r0, r1, c0, c1 = max(0, row - rmax), min(h, row + rmax + 1), max(0, col - rmax), min(w, col + rmax + 1)
    patch = g[r0:r1, c0:c1]
    yy, xx = np.mgrid[r0:r1, c0:c1]
    d = np.hypot(yy - row, xx - col)
    best, arg = -1.0, float(radii[0])
    for r in radii:
        disc, ring = d <= r, (d > r) & (d <= 1.5 * r)
        if disc.any() and ring.any():
            c = abs(float(patch[disc].mean() - patch[ring].mean()))
            if c > best:
                best, arg = c, float(r)
    return arg


Lesions = list[tuple[float, float, float, str]]       # (col, row, radius px, kind), as in the phantom QA


def _training_items(modality: str, first: int, n: int) -> list[tuple[np.ndarray, Lesions]]:
    from medq_synth.sources.phantoms import synthetic_item

    out = []
    for i in range(first, first + n):
        item = synthetic_item(modality, i, source="cho-training")
        out.append((l0_display(item), [tuple(v) for v in item.qa.extra["lesions"]]))
    return out


def _search_region(modality: str, first: int, n: int, radius: float) -> np.ndarray:
    """Pixels within ``radius`` of a lesion centre of any of ``n`` phantoms (anatomy only, not rendered as
    items): where lesions occur, the observer's location prior."""
    from scipy import ndimage as ndi

    from medq_synth.seeding import derive_seed
    from medq_synth.sources.phantoms import _SPEC, SIZE

    hit = np.zeros((SIZE, SIZE), bool)
    for i in range(first, first + n):
        _, lesions = _SPEC[modality]["fn"](np.random.default_rng(derive_seed("phantom", modality, i)))
        for les in lesions:
            hit[min(SIZE - 1, int(les.y)), min(SIZE - 1, int(les.x))] = True
    return ndi.distance_transform_edt(~hit) <= radius


def _near_lesion(shape: tuple[int, int], lesions, margin: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]] + 0.5
    out = np.zeros(shape, bool)
    for x, y, r, _ in lesions:
        out |= np.hypot(xx - x, yy - y) <= r + margin
    return out


def quadrant_max(z: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    h, w = z.shape
    out = {}
    for q in QUADRANTS:
        rows = slice(h // 2, h) if q.startswith("lower") else slice(0, h // 2)
        cols = slice(w // 2, w) if q.endswith("right") else slice(0, w // 2)
        m = mask[rows, cols]
        out[q] = float(z[rows, cols][m].max()) if m.any() else float("nan")
    return out


def train(modality: str, n_train: int = N_TRAIN, first: int = TRAIN_FIRST, seed: int = 0) -> ModalityReader:
    """Train the reader of one modality on phantoms ``first .. first + n_train - 1`` (deterministic)."""
    from .. import cho

    spec = SPECS[modality]
    rng = np.random.default_rng(seed)
    data = _training_items(modality, first, n_train)
    kernel_half = int(math.ceil(1.5 * spec.width_px))
    kernels = cho.laguerre_gauss((2 * kernel_half + 1,) * 2, spec.width_px, CHANNELS)
    search = _search_region(modality, first, SEARCH_PRIOR_PHANTOMS, SEARCH_RADIUS_PX)
    maps = [_channel_maps(g, kernels) for g, _ in data]
    present: dict[int, list[np.ndarray]] = {s: [] for s in set(spec.polarity.values())}
    absent: list[np.ndarray] = []
    free_masks = []
    for (g, lesions), m in zip(data, maps, strict=True):
        for x, y, _r, kind in lesions:
            present[spec.polarity[kind]].append(m[:, int(y), int(x)])
        free = search & ~_near_lesion(g.shape, lesions, 3.0)
        free_masks.append(free)
        idx = np.flatnonzero(free)
        for k in rng.choice(idx, size=min(len(idx), 40), replace=False):
            absent.append(m[:, k // g.shape[1], k % g.shape[1]])
    reader = ModalityReader(modality, kernels, {}, {}, search)

    def fit_all(neg: list[np.ndarray]) -> None:
        a = np.array(neg)
        for sign, pos in present.items():
            obs = CHO(kernels.reshape(len(kernels), -1)).fit_channels(a, np.array(pos))
            t0 = a @ obs.w
            reader.observers[sign], reader.norm[sign] = obs, (float(t0.mean()), float(t0.std(ddof=1)))

    fit_all(absent)
    for (g, _lesions), m, free in zip(data, maps, free_masks, strict=True):   # hard negatives
        z = reader.z_map(g)
        for r, c in _peaks(z, free, MIN_PEAK_DISTANCE_PX)[:HARD_NEGATIVES]:
            absent.append(m[:, r, c])
    fit_all(absent)

    # decision statistics on the training phantoms: quadrant maxima, and peaks on / off lesions
    q0: dict[str, list[float]] = {q: [] for q in QUADRANTS}
    q1: dict[str, list[float]] = {q: [] for q in QUADRANTS}
    p0, p1 = [], []
    for g, lesions in data:
        z = reader.z_map(g)
        h, w = g.shape
        occupied = {quadrant_of(x, y, h, w) for x, y, _r, _k in lesions}
        for q, t in quadrant_max(z, search).items():
            (q1 if q in occupied else q0)[q].append(t)
        on = _near_lesion(g.shape, lesions, 0.0)
        for r, c, t in reader.candidates(g, z):
            (p1 if on[r, c] else p0).append(t)
    pooled = Fit.of(sum(q0.values(), []), sum(q1.values(), []))
    for q in QUADRANTS:
        # a quadrant where too few training lesions fell keeps the pooled "present" fit, and one outside the
        # search region (no statistic) answers from the training frequency of lesions there
        if not np.isfinite(q0[q] + q1[q]).any():
            reader.quadrant[q] = Fit(0, 1, 0, 1, prior1=(len(q1[q]) + 0.5) / (len(q0[q]) + len(q1[q]) + 1))
            continue
        a, b = q0[q], q1[q]
        f = Fit.of(a if len(a) >= 3 else sum(q0.values(), []), b if len(b) >= 3 else sum(q1.values(), []))
        reader.quadrant[q] = f if len(b) >= 3 else Fit(f.m0, f.v0, pooled.m1, pooled.v1)
    reader.peak = Fit.of(p0, p1, prior1=len(p1) / max(1, len(p0) + len(p1)))
    reader.training = {"phantoms": [first, first + n_train - 1], "present": {str(s): len(v) for s, v in
                       present.items()}, "absent": len(absent),
                       "peaks": [len(p0), len(p1)]}
    return reader


def count_distribution(p: list[float], top: int = 3) -> np.ndarray:
    """P(count = 0 .. top), the last entry holding the tail, of independent Bernoulli(p_i) (Poisson-binomial)."""
    dist = np.zeros(top + 1)
    dist[0] = 1.0
    for pi in p:
        nxt = dist * (1 - pi)
        nxt[1:] += dist[:-1] * pi
        nxt[top] += dist[top] * pi          # the tail stays in the last entry
        dist = nxt
    return dist


def largest_side(cands: list[tuple[float, float, float]], width: int) -> float:
    """P(the largest lesion is on the left) from candidates (col, radius px, P(lesion)), given that there is
    at least one lesion (the question presupposes it)."""
    order = sorted(cands, key=lambda t: -t[1])
    none_larger, left, total = 1.0, 0.0, 0.0
    for col, _r, p in order:
        share = p * none_larger
        total += share
        left += share * (col < width / 2)
        none_larger *= 1 - p
    return left / total if total > 0 else 0.5


def read(reader: ModalityReader, g: np.ndarray, task: str, region: str | None) -> tuple[dict[str, float], dict]:
    """Letter probabilities for one phantom question, and the statistics they came from."""
    z = reader.z_map(g)
    mask = reader.search_mask(g.shape)
    qmax = quadrant_max(z, mask)
    stats: dict[str, Any] = {"quadrant_max": {q: round(v, 6) for q, v in qmax.items()}}
    h, w = g.shape
    if task == "lesion_presence":
        f, t = reader.quadrant[region], qmax[region]
        p = float(f.posterior(t)) if np.isfinite(t) else f.prior1
        return {"A": p, "B": 1 - p}, stats
    cands = reader.candidates(g, z)
    p_les = [float(v) for v in reader.peak.posterior(np.array([t for _r, _c, t in cands]))] if cands else []
    if task == "lesion_count":
        dist = count_distribution(p_les)
        stats["expected_count"] = round(float(np.dot(np.arange(4), dist)), 6)
        return dict(zip("ABCD", (float(v) for v in dist), strict=True)), stats
    k = max(g.shape) / 256.0
    radii = np.arange(2.0, 16.5, 0.5) * k
    sized = [(c, radius_estimate(g, r, c, radii), p) for (r, c, _t), p in zip(cands, p_les, strict=True) if p > 1e-3]
    p_left = largest_side(sized, w)
    return {"A": p_left, "B": 1 - p_left}, stats


_READERS: dict[tuple[str, int], ModalityReader] = {}
_LOCK = threading.Lock()
TASKS = ("lesion_presence", "lesion_count", "lesion_side")


def _code_digest() -> str:
    """SHA-256 of every source file and table of the package: a trained reader is cached under it, so any
    change to the phantoms, the renderers or the observer retrains."""
    import hashlib

    import medq_synth
    import medq_synth.eval
    import medq_synth.kernels
    import medq_synth.physics

    h = hashlib.sha256()
    packages = (medq_synth, medq_synth.eval, medq_synth.physics, medq_synth.kernels)   # mapped folders
    for root in sorted({Path(p).resolve() for pkg in packages for p in pkg.__path__}):
        for f in sorted(root.rglob("*")):
            if f.suffix in (".py", ".toml") and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    h.update(f"numpy {np.__version__}".encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    import os

    return Path(os.environ.get("MEDQ_SYNTH_CACHE") or Path.home() / ".cache" / "medq-synth") / "cho"


def reader_for(modality: str, n_train: int = N_TRAIN) -> ModalityReader:
    """The trained reader of a modality: trained once (deterministic), kept for the process and on disk
    (``$MEDQ_SYNTH_CACHE`` or ``~/.cache/medq-synth``, keyed by the package's code digest); an unreadable
    cache file is retrained over."""
    import os
    import pickle

    with _LOCK:
        key = (modality, n_train)
        if key in _READERS:
            return _READERS[key]
        path = cache_dir() / f"{modality}-{n_train}-{_code_digest()}.pkl"
        reader = None
        try:
            with path.open("rb") as f:
                got = pickle.load(f)
            reader = got if isinstance(got, ModalityReader) and got.modality == modality else None
        except Exception:  # noqa: BLE001 - missing, truncated or foreign: train again
            reader = None
        if reader is None:
            reader = train(modality, n_train)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_bytes(pickle.dumps(reader))
                os.replace(tmp, path)
            except OSError:                  # a read-only home: keep it in memory only
                pass
        _READERS[key] = reader
        return reader


def _as_256(g: np.ndarray) -> np.ndarray:
    from medq_synth.sources.phantoms import SIZE

    if g.shape == (SIZE, SIZE):
        return g
    from skimage.transform import resize

    return resize(g, (SIZE, SIZE), order=1, anti_aliasing=True)


class ChoObserver(ImageReader):
    """The scanning channelized Hotelling observer (module docstring): reads the phantoms' lesion presence,
    count and side questions of CT, MRI, ultrasound and X-ray phantoms; abstains on anything else."""

    name = "cho"

    def __init__(self, n_train: int = N_TRAIN) -> None:
        self.n_train = int(n_train)

    def _read(self, q: Query) -> tuple[dict[str, float], dict] | str:
        task, modality, letters = q.meta.get("task"), q.meta.get("modality"), q.letters
        if task not in TASKS or (letters, task) not in (("AB", "lesion_presence"), ("ABCD", "lesion_count"),
                                                        ("AB", "lesion_side")):
            return (f"not a question the observer reads (task {task!r}, options {letters}; it reads the phantoms' "
                    "lesion presence, count and side questions)")
        if modality not in SPECS:
            return f"no observer trained for modality {modality!r} (trained: {', '.join(SPECS)})"
        if task == "lesion_presence" and q.meta.get("region") not in QUADRANTS:
            return f"unknown quadrant {q.meta.get('region')!r}"
        return read(reader_for(modality, self.n_train), _as_256(grey(q.images[0])), task, q.meta.get("region"))
