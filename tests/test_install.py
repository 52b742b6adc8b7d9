"""The install: every package imported anywhere is declared, base dependencies are used, and a
feature whose extra is missing names the extra to install."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch

from tmaps.extras import MissingExtraError
from tmaps.inference.decoding import BeamSearchDecoder
from tmaps.inference.export import export_onnx
from tmaps.introspect.layout import compute_layout
from tmaps.text import Alphabet
from tmaps.training.loggers import tensorboard_logger

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["tmaps", "scripts", "benchmarks", "tests", "docs"]
# Declared for what they do inside another package, not imported by tmaps.
USED_INDIRECTLY = {
    "tabulate": "pandas' DataFrame.to_markdown",
    "onnx": "torch.onnx's dynamo exporter",
    "ipykernel": "the kernel nbclient runs the notebook in",
    "mkdocstrings": "the API reference of mkdocs.yml",
    "hydra-optuna-sweeper": "hparams_search=optuna",
    "hydra-submitit-launcher": "hydra/launcher=submitit_local and slurm",
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = {extra: {_name(r) for r in requirements if not r.startswith("tmaps")} for extra, requirements in project["optional-dependencies"].items()}
    return {_name(r) for r in project["dependencies"]}, extras


def imported_modules() -> dict[str, set[str]]:
    """Top-level modules imported (or named in ``require("...")``) by the repository's code and notebook, with where."""
    modules: dict[str, set[str]] = {}
    sources = [path for folder in SOURCES for path in (REPO / folder).rglob("*.py")]
    codes = [(path, path.read_text(encoding="utf-8")) for path in sources]
    for notebook in (REPO / "notebooks").glob("*.ipynb"):
        cells = json.loads(notebook.read_text())["cells"]
        codes.append((notebook, "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")))
    for path, code in codes:
        for node in ast.walk(ast.parse(code)):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require" and node.args and isinstance(node.args[0], ast.Constant):
                names = [node.args[0].value]
            for name in names:
                modules.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return modules


def test_every_imported_package_is_declared():
    base, extras = declared()
    every = base | set().union(*extras.values())
    distributions = importlib.metadata.packages_distributions()
    local = {"tmaps"} | {path.stem for folder in SOURCES for path in (REPO / folder).rglob("*.py")}
    undeclared = {}
    for module, files in imported_modules().items():
        if module in sys.stdlib_module_names or module in local or module == "__future__":
            continue
        names = {name.lower().replace("_", "-") for name in distributions.get(module, [module])}
        if not names & every:
            undeclared[module] = sorted(files)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_base_dependency_is_used():
    base, _ = declared()
    distributions = importlib.metadata.packages_distributions()
    used = {name.lower() for module in imported_modules() for name in distributions.get(module, [])}
    unused = sorted(name for name in base if name not in used and name not in USED_INDIRECTLY)
    assert not unused, f"base dependencies that nothing imports: {unused}"


def test_optional_packages_stay_out_of_the_base_install():
    base, extras = declared()
    for package in ("umap-learn", "tensorboard", "flashlight-text", "onnxruntime", "datasets", "minisom", "psutil", "jiwer"):
        assert package not in base
    assert {"umap", "tensorboard", "sweep", "decode", "export", "bench", "hf", "docs", "dev"} <= set(extras)


@pytest.mark.parametrize(
    ("module", "extra", "use"),
    [
        ("umap", "umap", lambda: compute_layout("umap", np.random.default_rng(0).normal(size=(40, 6)))),
        ("tensorboard", "tensorboard", lambda: tensorboard_logger(save_dir="unused")),
        ("flashlight", "decode", lambda: BeamSearchDecoder(Alphabet("ab"))),
        ("onnxscript", "export", lambda: export_onnx(torch.nn.Identity(), "unused.onnx", ())),
    ],
    ids=["umap", "tensorboard", "decode", "export"],
)
def test_a_missing_extra_is_named(module, extra, use, monkeypatch):
    for name in [name for name in sys.modules if name == module or name.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # what Python does for a package that is not installed
    with pytest.raises(MissingExtraError, match=re.escape(f"pip install 'tmaps[{extra}]'")):
        use()
