"""python -m deploy.grafana [--check]: write the dashboards and the generated tables of
docs/observability.md, or (--check) fail when the committed ones are stale."""

from __future__ import annotations

import argparse
import sys

from . import DASHBOARDS, OUT_DIR, render
from ._docs import DOC, render_doc, tables


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.grafana", description=__doc__)
    p.add_argument("--check", action="store_true", help="fail if committed files are stale")
    args = p.parse_args(argv)
    wanted = {
        OUT_DIR / f"aiml021-{stem}.json": render(build()) for stem, build in DASHBOARDS.items()
    }
    wanted[DOC] = render_doc(DOC.read_text(), tables(DASHBOARDS))
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text() != text]
    if args.check:
        if stale:
            print("stale (run python -m deploy.grafana):", *stale, sep="\n  ")
            return 1
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for path in stale:
        path.write_text(wanted[path])
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
