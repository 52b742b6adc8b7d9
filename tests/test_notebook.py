"""``notebooks/walkthrough.ipynb`` runs end to end on a tiny model trained in the notebook."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def test_the_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells and all(not cell.outputs and cell.execution_count is None for cell in code_cells)


def test_the_walkthrough_runs_on_a_tiny_model_and_draws_its_maps(synth_corpus_en, tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    parameters.source += f"\ncorpus = {str(synth_corpus_en)!r}\ndata_dir = {str(tmp_path / 'data')!r}\ntiny_training_steps = 10\n"
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    output = tmp_path / "walkthrough_output"
    for name in ("profiles.npz", "maps_som.png", "layers_som.png"):
        assert (output / name).stat().st_size > 1000, name
    images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2
    printed = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "tiny model: CTC loss" in printed and "layers to map: ['conv2', 'conv3', 'head']" in printed
