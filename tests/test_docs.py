"""The docs stay honest: every relative link and every repository path named in README.md, SECURITY.md and
docs/ exists, and the README stays a product page (at most 25 KB)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("wtours/", "wtours_base/", "dora/", "analysis/", "benchmarks/", "tests/", "docs/", "manifests/")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_and_paths_exist(page):
    text = page.read_text()
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)", text):  # [text](target) and ![alt](target)
        if "://" not in target and not (page.parent / target).exists():
            missing.append(target)
    for span in re.findall(r"`([^`\s]+)`", text):  # repository paths named in code spans
        path = span.rstrip(".,:;)")
        if path.startswith(TOP) and not any(c in path for c in "*{}<>$") and not (ROOT / path).exists():
            missing.append(path)
    assert not missing, f"{page.name} names what is not there: {sorted(set(missing))}"


def test_the_readme_is_a_product_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 25_000
    headings = [line for line in readme.splitlines() if line.startswith("## ")]
    assert headings[:3] == ["## Two commands", "## Quick start: from a tour to an evaluated encoder", "## What it is"]
    assert {"## Results now", "## Documentation", "## Layout"} <= set(headings)
