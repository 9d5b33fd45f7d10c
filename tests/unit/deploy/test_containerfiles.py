"""deploy/containers: each image is built in stages (tools stay in the first), runs as a numeric
non-root user, and pins what it installs (the base image by tag or digest, never ``latest``;
Python packages by the lock file as constraints); the files they copy exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FILES = sorted((ROOT / "deploy" / "containers").glob("*.Containerfile"))


def test_there_is_a_gateway_and_an_edge_agent_image() -> None:
    assert {f.name for f in FILES} == {"gateway.Containerfile", "edge-agent.Containerfile"}


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_multi_stage_non_root_and_pinned(path: Path) -> None:
    text = path.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.MULTILINE)
    assert len(stages) >= 2 and stages[0][1] == "build", stages
    assert re.search(r"^COPY --from=build ", text, re.MULTILINE)
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    image = base.group(1)
    assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+", image), image
    assert not image.endswith(":latest")
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    final = text.split("\nFROM ")[-1]
    assert "pip install" not in final  # nothing is installed into the runtime stage
    assert "sed -E 's/\\[[^]]*\\]//' requirements/lock.txt > /tmp/constraints.txt" in text
    for line in re.findall(r"pip install[^\n]*(?:\\\n[^\n]*)*", text):
        assert "--constraint /tmp/constraints.txt" in line, line  # the lock, extras stripped
    for src in re.findall(r"^COPY (?!--from)(\S+) ", text, re.MULTILINE):
        assert (ROOT / src).exists(), src
