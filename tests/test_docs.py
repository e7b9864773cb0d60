# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""The card and the manual: every relative link of README.md and docs/*.md leads to a file (and #anchor) that
exists, the card stays short, and its test command is exactly what CI runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Set, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
CARD_LIMIT_BYTES = 16 * 1024
# [text](target) outside code; images too. Absolute URLs (scheme:) and mail links are not checked here.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")


def _prose(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    if text.startswith("---\n"):  # YAML front matter
        text = text.split("\n---\n", 1)[1]
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def heading_anchors(path: Path) -> Set[str]:
    """GitHub's anchors for the headings of a Markdown file: lower case, punctuation dropped, spaces to '-',
    repeated headings numbered -1, -2, ..."""
    anchors: Set[str] = set()
    for line in _FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).replace("`", "").lower()).replace(" ", "-")
        candidate, number = slug, 0
        while candidate in anchors:
            number += 1
            candidate = f"{slug}-{number}"
        anchors.add(candidate)
    return anchors


def relative_links(path: Path) -> List[Tuple[str, Path, str]]:
    """(link as written, target file, anchor) for every relative link of `path`."""
    links = []
    for target in _LINK.findall(_prose(path)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue
        file_part, _, anchor = target.partition("#")
        links.append((target, (path.parent / file_part).resolve() if file_part else path, anchor))
    return links


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(REPO_ROOT).as_posix())
def test_every_relative_link_leads_somewhere(document):
    links = relative_links(document)
    broken = []
    for written, target, anchor in links:
        if not target.exists():
            broken.append(f"{written}: no file {target}")
        elif anchor and (target.suffix != ".md" or anchor not in heading_anchors(target)):
            broken.append(f"{written}: no heading #{anchor} in {target.name}")
    assert not broken, f"{document.name}: " + "; ".join(broken)


def test_the_link_checker_sees_broken_links(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## Same kernels, same bits\n\n[ok](#same-kernels-same-bits) "
                                   "[bad](#nowhere) [gone](missing.md) `[code](ignored.md)` [web](https://x.org)\n")
    links = relative_links(tmp_path / "a.md")
    assert [written for written, _, _ in links] == ["#same-kernels-same-bits", "#nowhere", "missing.md"]
    assert heading_anchors(tmp_path / "a.md") == {"title", "same-kernels-same-bits"}


def test_the_manual_is_linked_from_the_card():
    card_targets = {target.name for _, target, _ in relative_links(REPO_ROOT / "README.md")}
    pages = {path.name for path in (REPO_ROOT / "docs").glob("*.md")}
    assert {"README.md", "batch-cli.md", "ray.md", "deploy.md", "parity.md", "speed.md",
            "inputs-and-errors.md"} <= pages
    assert pages - {"README.md"} <= card_targets | {"README.md"}, pages - card_targets


def test_the_card_is_short():
    size = len((REPO_ROOT / "README.md").read_bytes())
    assert size <= CARD_LIMIT_BYTES, f"README.md is {size} bytes; the manual belongs in docs/"


def test_the_cards_test_command_is_what_ci_runs():
    body = (REPO_ROOT / "README.md").read_text(encoding="utf-8").split("\n---\n", 1)[1]
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", body, re.DOTALL)
    test_command = blocks[1].strip()
    ci_commands = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
                   if line.strip() and not line.lstrip().startswith("#")]
    assert test_command in ci_commands
    assert "pytest -q tests" in test_command and "tools/transformers_matrix.sh" in test_command


def test_the_deploy_page_covers_the_endpoint_and_what_to_upload():
    text = (REPO_ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for needed in ("Inference Endpoint", "handler.py", "EndpointHandler", "PreTrainedPipeline", "MASK_RCNN_DTYPE",
                   "HF_TRUST_REMOTE_CODE", "mask_format", "pycocotools", 'convert("RGB")',
                   "python hub_folder_mask_rcnn.py .", "--push-to-hub"):
        assert needed in text, needed
