"""``python -m benchmarks.soak.traced serve ...``: the gateway under tracemalloc, for memory
investigations (:mod:`benchmarks.soak.memory`).

Runs ``aiml021`` with ``tracemalloc`` tracing ``AIML021_TRACEMALLOC_FRAMES`` frames (10); each
SIGUSR1 writes a snapshot to ``AIML021_TRACEMALLOC_DIR/snapshot-NNN.pickle`` (after a full
garbage collection when ``AIML021_TRACEMALLOC_GC=1``: what is left then is reachable, not cyclic
garbage waiting for the collector; ``gc.json`` beside them says what each collection freed).
SIGUSR2 appends to ``referrers.txt`` how many instances of each of ``AIML021_TRACEMALLOC_CLASS``
(``module:Class,...``) are alive, for a few of the first class the chain of objects that keeps
each alive, and where the event loop's tasks wait (``AIML021_TRACEMALLOC_FRAMES=0``: no
tracemalloc, only these dumps). Tracing slows the
gateway down severalfold and sees only memory Python allocates (not grpc core's or
onnxruntime's), so it points at Python-level retention; RSS is measured without it.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any


def main(argv: list[str]) -> int:
    out = Path(os.environ["AIML021_TRACEMALLOC_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    frames = int(os.environ.get("AIML021_TRACEMALLOC_FRAMES", "10"))
    if frames > 0:  # 0: no tracing, only the referrer dumps (SIGUSR2)
        tracemalloc.start(frames)
    collect = os.environ.get("AIML021_TRACEMALLOC_GC") == "1"
    taken = 0
    freed: list[int] = []

    def snapshot(signum: int, frame: FrameType | None) -> None:
        nonlocal taken
        if not tracemalloc.is_tracing():
            return
        taken += 1
        if collect:
            freed.append(gc.collect())
            (out / "gc.json").write_text(json.dumps({"freed": freed, "stats": gc.get_stats()}))
        tracemalloc.take_snapshot().dump(str(out / f"snapshot-{taken:03d}.pickle"))

    def referrers(signum: int, frame: FrameType | None) -> None:
        _referrers(out, os.environ.get("AIML021_TRACEMALLOC_CLASS", ""))

    signal.signal(signal.SIGUSR1, _never_raising(snapshot))
    signal.signal(signal.SIGUSR2, _never_raising(referrers))
    from common.cli import main as cli

    return cli(argv)


def _never_raising(handler: Callable[[int, FrameType | None], None]) -> Any:
    """A signal handler runs inside whatever the interrupted code was doing (a Redis write, a
    request): an exception from it must not surface there."""

    def safe(signum: int, frame: FrameType | None) -> None:
        try:
            handler(signum, frame)
        except Exception as exc:
            print(f"traced: {handler.__name__} failed: {exc!r}", file=sys.stderr, flush=True)

    return safe


def _describe(o: object) -> str:
    name = type(o).__qualname__
    if isinstance(o, dict):
        return f"{name} keys={list(o)[:8]}"
    if isinstance(o, (list, tuple, set)):
        return f"{name} len={len(o)}"
    code = getattr(o, "cr_code", None) or getattr(o, "gi_code", None) or getattr(o, "f_code", None)
    if code is not None:
        return f"{name} {code.co_filename}:{code.co_firstlineno} {code.co_name}"
    return name


_seen_before: set[int] = set()


def _preview(o: object) -> str:
    if isinstance(o, (list, tuple)):
        return f" [{', '.join(type(x).__name__ for x in o[:4])}{', ...' if len(o) > 4 else ''}]"
    if isinstance(o, dict):
        return f" {list(o)[:6]}"
    return ""


def _referrers(out: Path, spec: str) -> None:
    import importlib

    classes = []
    for one in spec.split(","):
        module, _, cls_name = one.rpartition(":")
        try:
            classes.append(getattr(importlib.import_module(module or "builtins"), cls_name))
        except (ImportError, AttributeError):
            print(f"traced: no class {one!r}", file=sys.stderr, flush=True)
    gc.collect()
    objects = gc.get_objects()
    lines = [f"{sum(isinstance(o, c) for o in objects)} {c.__qualname__} alive" for c in classes]
    alive = [o for o in objects if type(o) is classes[0] or isinstance(o, classes[0])]
    del objects
    # Chains of instances that appeared since the last dump and are still alive: what grows.
    ids = {id(o) for o in alive}
    new = [o for o in alive if id(o) not in _seen_before] if _seen_before else alive
    _seen_before.clear()
    _seen_before.update(ids)
    lines.append(f"{len(new)} of them new since the last dump")
    alive = new
    here = sys._getframe()
    sample = alive[:: max(1, len(alive) // 3)][:3]
    for obj in sample:
        lines.append(f"-- {_describe(obj)}{_preview(obj)}")
        seen = {id(alive), id(here), id(sample), id(lines)}
        o = obj
        for depth in range(10):  # one chain: the first other referrer of each object
            nxt = next((r for r in gc.get_referrers(o) if id(r) not in seen), None)
            if nxt is None:
                break
            seen.add(id(nxt))
            lines.append("  " * depth + _describe(nxt))
            o = nxt
        del o
    try:
        import asyncio
        import collections

        tasks = asyncio.all_tasks()
        where: collections.Counter[str] = collections.Counter()
        for t in tasks:
            frames = t.get_stack(limit=1)
            at = f"{frames[0].f_code.co_filename}:{frames[0].f_lineno}" if frames else "-"
            coro = t.get_coro()
            where[f"{getattr(coro, '__qualname__', type(coro).__name__)} at {at}"] += 1
        lines.append(f"== {len(tasks)} tasks")
        lines += [f"{n:6d} {w}" for w, n in where.most_common(15)]
    except RuntimeError:  # no running loop
        pass
    with (out / "referrers.txt").open("a") as f:
        f.write(f"==== {time.time():.0f}\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
