"""``python -m cloud serve ...`` runs the gateway (same as ``aiml021 serve``)."""

import sys

from common.cli import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
