"""The documentation: the MkDocs site builds in strict mode, every page is in its nav, and the README stays a
short front page whose links resolve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README_MAX_LINES = 250


class IgnoringUnknownTags(yaml.SafeLoader):
    """A safe loader that reads mkdocs.yml's tags it does not know (`!!python/name:...`, `!ENV`) as None."""


IgnoringUnknownTags.add_multi_constructor("", lambda loader, suffix, node: None)


def nav_pages(node: object) -> list[str]:
    """The page paths of a MkDocs nav: strings anywhere in its nested lists and {title: page} mappings."""
    if isinstance(node, str):
        return [] if "://" in node else [node]
    if isinstance(node, list):
        return [page for item in node for page in nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in nav_pages(value)]
    return []


def test_mkdocs_build_is_strict_clean(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings"):
        pytest.importorskip(module)
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"


def test_readme_is_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; keep it to {README_MAX_LINES}"


def test_every_docs_page_is_in_the_nav():
    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=IgnoringUnknownTags)
    listed = set(nav_pages(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"
    assert listed - pages == set(), "nav entries without a page in docs/"


@pytest.mark.parametrize("name", ["README.md", "CONTRIBUTING.md"])
def test_relative_links_resolve(name):
    text = (REPO / name).read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    missing = [
        t
        for t in targets
        if "://" not in t and not t.startswith(("#", "mailto:")) and not (REPO / t.split("#")[0]).exists()
    ]
    assert missing == [], f"{name} links to missing files"
