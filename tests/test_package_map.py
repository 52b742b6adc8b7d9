"""No import runs upward: each package imports only the packages listed before it (docs/design.md, README)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tmaps"
# Bottom up, as in the package map of docs/design.md.
LAYERS = [
    "extras", "config_types", "processes", "progress", "text", "models", "topo", "checkpoint", "data", "introspect", "inference", "transfer",
    "training", "callbacks", "studies", "commands",
]
CORE = ("topo", "introspect")  # plain PyTorch/NumPy
FRAMEWORKS = ("pytorch_lightning", "lightning", "hydra", "omegaconf")
def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def package_of(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def test_every_module_belongs_to_a_layer_of_the_map():
    packages = {package_of(path) for path in PACKAGE.rglob("*.py") if path.name != "__init__.py" or path.parent != PACKAGE}
    assert packages - {"conf"} == set(LAYERS)


def test_no_import_runs_upward_and_the_core_never_imports_lightning_or_hydra():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent == PACKAGE and path.name == "__init__.py" or package_of(path) == "conf":
            continue
        own = package_of(path)
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "tmaps" and len(parts) > 1 and parts[1] != own and LAYERS.index(parts[1]) > LAYERS.index(own):
                upward.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
            if own in CORE and parts[0] in FRAMEWORKS:
                upward.append(f"{path.relative_to(PACKAGE.parent)} (core) imports {module}")
    assert not upward, "\n".join(upward)


def test_the_studies_statistics_load_no_torch_lightning_or_hydra():
    """``tmaps.studies.stats`` is plain NumPy/SciPy: importing it, with everything it imports, loads none of them."""
    check = "import sys, tmaps.studies.stats; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[1:])))"
    loaded = subprocess.run([sys.executable, "-c", check, "torch", *FRAMEWORKS], cwd=PACKAGE.parent, capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == []
