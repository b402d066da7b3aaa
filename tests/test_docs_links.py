"""Every relative link in README.md, docs/*.md and bench/README.md resolves to a file in the repository.

Docs link only to docs/, bench/, examples/ (and the README); code under workbench/ is named in backticks, not linked,
because modules move between releases and a link would rot silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); a target ends at whitespace or ')'.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
LINKABLE = ("docs/", "bench/", "examples/", "README.md")


def relative_links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks are not links
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, mailto:, in-page anchors
        out.append(target.split("#", 1)[0])
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken, outside = [], []
    for target in relative_links(page.read_text()):
        resolved = (page.parent / target).resolve()
        try:
            rel = resolved.relative_to(ROOT).as_posix()
        except ValueError:
            outside.append(target)
            continue
        if not rel.startswith(LINKABLE):
            outside.append(target)
        elif not resolved.exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files: {broken}"
    assert not outside, (
        f"{page.relative_to(ROOT)}: link only docs/, bench/, examples/ (name code in backticks): {outside}"
    )


def test_the_checker_finds_links():
    text = "see [a](docs/a.md#x), ![b](screenshots/b.png), [web](https://x.y), [here](#top)\n```\n[no](c.md)\n```"
    assert relative_links(text) == ["docs/a.md", "screenshots/b.png"]


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "bash scripts/install.sh && .venv/bin/python app.py" in text
    assert "bash scripts/install.sh && .venv/bin/python -m pytest -q" in text
