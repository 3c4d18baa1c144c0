"""The evaluation loop: a producer (the degradation engine, or a dataset reader) fills a bounded queue with
batches of samples in a background thread, while the model answers in the calling thread; synthesis and
inference overlap, and nothing goes through PNG files unless the backend needs them.

Every answer becomes a record in the store as soon as its batch returns; backend failures are isolated (a
failing batch is split until the failing query is found) and recorded in ``errors.jsonl`` with the key, so
the next run asks again; nothing is dropped silently."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import Backend, Decoding, Reply
from .records import Sample, Setting, make_record
from .store import Store

_DONE = object()


@dataclass
class LoopStats:
    answered: int = 0
    skipped_done: int = 0
    failed: int = 0
    produced: int = 0
    model_s: float = 0.0
    wall_s: float = 0.0
    failures_kept: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"answered": self.answered, "skipped_done": self.skipped_done, "failed": self.failed,
                "produced": self.produced, "model_s": round(self.model_s, 3), "wall_s": round(self.wall_s, 3),
                "items_per_s": round(self.answered / self.wall_s, 3) if self.wall_s else None,
                "model_items_per_s": round(self.answered / self.model_s, 3) if self.model_s else None}


class _Producer(threading.Thread):
    """Runs ``batches`` into a bounded queue; an exception is handed to the consumer, not lost."""

    def __init__(self, batches: Iterable[list[Sample]], depth: int) -> None:
        super().__init__(daemon=True)
        self.batches, self.q = batches, queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            for b in self.batches:
                if self.stop.is_set():
                    return
                self.q.put(b)
        except BaseException as e:      # re-raised in the consumer thread
            self.error = e
        finally:
            self.q.put(_DONE)

    def __iter__(self) -> Iterator[list[Sample]]:
        while (b := self.q.get()) is not _DONE:
            yield b
        if self.error is not None:
            raise self.error


def _answer_isolated(backend: Backend, samples: list[Sample], setting: Setting, decoding: Decoding) -> list[Reply]:
    """Replies for every sample; an exception splits the batch until the failing sample is alone, and a
    reply list of the wrong length is flagged per missing sample (never silently truncated)."""
    try:
        replies = backend.answer([setting.query(s) for s in samples], decoding)
    except Exception as e:
        if len(samples) == 1:
            return [Reply(error=f"{type(e).__name__}: {e}")]
        mid = len(samples) // 2
        return (_answer_isolated(backend, samples[:mid], setting, decoding)
                + _answer_isolated(backend, samples[mid:], setting, decoding))
    replies = list(replies)
    if len(replies) < len(samples):
        n = len(replies)
        replies += [Reply(error=f"the backend returned {n} replies for {len(samples)} queries")
                    for _ in range(len(samples) - n)]
    for r in replies[: len(samples)]:
        if (r.error is None and not r.abstain and decoding.trials and len(r.samples) != decoding.trials
                and samples[0].kind == "mcq"):
            r.error = f"the backend returned {len(r.samples)} of {decoding.trials} samples"
        if r.error is None and r.text is None and not r.abstain:
            r.error = "the backend returned no text"
    return replies[: len(samples)]


def evaluate(batches: Iterable[list[Sample]], backend: Backend, setting: Setting, store: Store,
             batch_size: int = 8, depth: int = 4, progress: bool = True,
             on_record: Callable[[Sample, dict[str, Any]], None] | None = None) -> LoopStats:
    """Answer every sample whose key is not yet in ``store``; ``batches`` may come from any producer."""
    from tqdm import tqdm

    stats = LoopStats()
    t0 = time.perf_counter()
    decoding = setting.decoding
    bar = tqdm(desc="infer", unit="item", disable=not progress, position=1, dynamic_ncols=True, leave=True)
    producer = _Producer(batches, depth)
    producer.start()
    pending: list[Sample] = []

    def flush(chunk: list[Sample]) -> None:
        t = time.perf_counter()
        replies = _answer_isolated(backend, chunk, setting, decoding)
        stats.model_s += time.perf_counter() - t
        records, errors = [], []
        for s, r in zip(chunk, replies, strict=True):
            if r.error:
                errors.append({"stage": "model", "key": setting.key(s), "item": s.output_id, "model": setting.model,
                               "reason": r.error})
                continue
            rec = make_record(s, setting, r)
            records.append(rec)
            if on_record:
                on_record(s, rec)
        store.add(records)
        store.error(errors)
        stats.answered += len(records)
        stats.failed += len(errors)
        bar.update(len(chunk))
        bar.set_postfix(failed=stats.failed)

    try:
        for batch in producer:
            stats.produced += len(batch)
            for s in batch:
                if store.done(setting.key(s)):
                    stats.skipped_done += 1
                else:
                    pending.append(s)
            while len(pending) >= batch_size:
                flush(pending[:batch_size])
                pending = pending[batch_size:]
        if pending:
            flush(pending)
    finally:
        producer.stop.set()
        while producer.is_alive():          # unblock a producer waiting on a full queue, then let it stop
            try:
                producer.q.get(timeout=0.1)
            except queue.Empty:
                pass
        bar.close()
    stats.wall_s = time.perf_counter() - t0
    return stats


class FailureSheet:
    """Keeps thumbnails of the ``keep`` wrong answers with the smallest keys (a deterministic choice that a
    resumed run reaches too: a qualifying answer is written when answered and never needs to be revisited)."""

    def __init__(self, root: Path, keep: int = 12, size: int = 160) -> None:
        self.dir = Path(root) / "failures"
        self.keep, self.size = keep, size

    def __call__(self, s: Sample, rec: dict[str, Any]) -> None:
        if s.kind != "mcq" or rec.get("abstained") or rec["correct"] or not s.images:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        kept = sorted(p.stem for p in self.dir.glob("*.png"))
        if len(kept) >= self.keep and rec["key"] >= kept[self.keep - 1]:
            return
        from PIL import Image

        im = Image.fromarray(s.images[0]).convert("RGB")
        im.thumbnail((self.size, self.size))
        im.save(self.dir / f"{rec['key']}.png")
        for stale in sorted(p.stem for p in self.dir.glob("*.png"))[self.keep:]:
            (self.dir / f"{stale}.png").unlink(missing_ok=True)
