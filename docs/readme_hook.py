"""MkDocs hook: the user guide page is the README, so the two never drift apart."""

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != "index.md":
        return markdown
    # The README links figures from the repository root; the site serves docs/ as its root.
    return README.read_text(encoding="utf-8").replace("](docs/", "](")
