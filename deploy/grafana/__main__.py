"""python -m deploy.grafana [--check]: write the dashboards, or check the committed ones."""

from __future__ import annotations

import argparse
import sys

from . import DASHBOARDS, OUT_DIR, render


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.grafana", description=__doc__)
    p.add_argument("--check", action="store_true", help="fail if committed JSON is stale")
    args = p.parse_args(argv)
    stale = []
    for stem, build in DASHBOARDS.items():
        path = OUT_DIR / f"aiml021-{stem}.json"
        text = render(build())
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(path)
    if stale:
        print("stale dashboards (run python -m deploy.grafana):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
