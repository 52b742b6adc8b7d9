"""The documentation: the site builds in strict mode with the README as its home page, and every link and
image works both on the site and where GitHub shows the Markdown files."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
# Markdown that GitHub renders from the repository: the README and the guide pages.
MARKDOWN = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
MARKDOWN_TARGET = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
MACHINE_PATH = re.compile(r"(?<![\w.<>~-])/(?:work|tmp|root|home|Users|mnt|scratch)/")


class LocalReferences(HTMLParser):
    """Every ``src`` and ``href`` of a page that points into the site itself."""

    def __init__(self):
        super().__init__()
        self.references: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value and not urlsplit(value).scheme and not value.startswith(("#", "//", "mailto:")):
                self.references.append(value)


def markdown_targets(path: Path) -> list[str]:
    """Relative link and image targets of a Markdown file, outside code blocks and code spans."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [target for target in MARKDOWN_TARGET.findall(text) if not urlsplit(target).scheme and not target.startswith("#")]


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda page: page.name)
def test_every_relative_link_and_image_resolves_where_github_shows_the_file(page):
    missing = [target for target in markdown_targets(page) if not (page.parent / unquote(target.split("#")[0])).exists()]
    assert not missing, f"{page.relative_to(REPO)} links to missing files: {missing}"


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda page: page.name)
def test_no_absolute_machine_path_in_the_docs(page):
    found = [line for line in page.read_text(encoding="utf-8").splitlines() if MACHINE_PATH.search(line)]
    assert not found, f"{page.relative_to(REPO)} names a machine path (use an example such as <corpora>/LibriSpeech): {found}"


def test_docs_build_strictly_with_the_readme_as_home_page_and_every_local_link_resolving(tmp_path):
    pytest.importorskip("mkdocstrings_handlers.python", reason="pip install 'tmaps[docs]'")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr

    home = (site / "index.html").read_text()
    assert "Quickstart" in home and "<!-- claims:start -->" in home
    assert 'src="figures/report_page_maps.png"' in home
    assert 'src="../figures/filter_maps_response_correlation_3.png"' in (site / "topography" / "index.html").read_text()

    for page in site.rglob("*.html"):
        if page.name == "404.html":
            continue
        parser = LocalReferences()
        parser.feed(page.read_text())
        for reference in parser.references:
            target = (page.parent / unquote(urlsplit(reference).path)).resolve()
            assert target.exists(), f"{page.relative_to(site)} refers to {reference}, which the site lacks"

    pages = {"topo": "build_regularizer", "introspect": "GradNAP", "transfer": "swap_alphabet", "models": "Wav2Letter", "inference": "Transcriber"}
    for page, name in pages.items():
        assert name in (site / "reference" / page / "index.html").read_text(), page
