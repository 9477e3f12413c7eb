"""The tutorials run, as notebooks, with their small default parameters (and assert what they show)."""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = sorted((Path(__file__).parent.parent / "tutorials").glob("*.ipynb"))


def test_there_is_one_tutorial_per_flow():
    assert [path.stem.split("_", 1)[0] for path in TUTORIALS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("path", TUTORIALS, ids=[path.stem for path in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    shutil.copy(path, tmp_path / path.name)
    notebook = nbformat.read(tmp_path / path.name, as_version=4)
    # a cell that raises stops the run with CellExecutionError (the test fails there), and
    # what a notebook asserts is in its own cells; what is checked here: every code cell ran
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert len(code) >= 3 and all(cell.get("execution_count") for cell in code)
