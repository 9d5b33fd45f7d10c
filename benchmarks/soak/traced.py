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
from pathlib import Path
from types import FrameType


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
        taken += 1
        if collect:
            freed.append(gc.collect())
            (out / "gc.json").write_text(json.dumps({"freed": freed, "stats": gc.get_stats()}))
        tracemalloc.take_snapshot().dump(str(out / f"snapshot-{taken:03d}.pickle"))

    signal.signal(signal.SIGUSR1, snapshot)
    signal.signal(
        signal.SIGUSR2,
        lambda s, f: _referrers(out, os.environ.get("AIML021_TRACEMALLOC_CLASS", "")),
    )
    from common.cli import main as cli

    return cli(argv)


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


def _referrers(out: Path, spec: str) -> None:
    import importlib

    classes = []
    for one in spec.split(","):
        module, _, cls_name = one.partition(":")
        classes.append(getattr(importlib.import_module(module), cls_name))
    gc.collect()
    objects = gc.get_objects()
    lines = [f"{sum(isinstance(o, c) for o in objects)} {c.__qualname__} alive" for c in classes]
    alive = [o for o in objects if isinstance(o, classes[0])]
    del objects
    here = sys._getframe()
    sample = alive[:: max(1, len(alive) // 3)][:3]
    for obj in sample:
        lines.append("--")
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
            where[f"{t.get_coro().__qualname__} at {at}"] += 1  # type: ignore[union-attr]
        lines.append(f"== {len(tasks)} tasks")
        lines += [f"{n:6d} {w}" for w, n in where.most_common(15)]
    except RuntimeError:  # no running loop
        pass
    with (out / "referrers.txt").open("a") as f:
        f.write(f"==== {time.time():.0f}\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
