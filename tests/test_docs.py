"""The documentation site builds in strict mode (no broken reference, no missing page), README as the guide."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_docs_build_strictly_with_the_api_reference_and_the_readme_as_guide(tmp_path):
    pytest.importorskip("mkdocstrings_handlers.python", reason="pip install 'tmaps[docs]'")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    guide = (site / "index.html").read_text()
    assert "Quickstart" in guide and 'src="figures/filter_maps_topo.png"' in guide
    pages = {"topo": "build_regularizer", "introspect": "GradNAP", "transfer": "swap_alphabet", "models": "Wav2Letter", "inference": "Transcriber"}
    for page, name in pages.items():
        assert name in (site / "reference" / page / "index.html").read_text(), page
