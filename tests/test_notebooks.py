"""Every notebook in notebooks/ runs end to end (nbclient, a real Jupyter kernel)."""
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
NEEDS_DATA = {
    "03_compare_representations.ipynb": "Fluo-N2DL-HeLa",
    "04_cell_tracking_challenge.ipynb": "Fluo-N2DL-HeLa",
}
#: notebooks that train their own model (and fall back to synthetic data without $CELLSEG_DATA)
NO_BUNDLED_MODEL_NEEDED = {"02_train_on_your_data.ipynb"}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from cellseg.models import list_models
    from tests.conftest import cellseg_data_dir

    if not list_models() and path.name not in NO_BUNDLED_MODEL_NEEDED:
        pytest.skip("no bundled model yet: the notebooks segment with the default model")
    d = cellseg_data_dir()
    need = NEEDS_DATA.get(path.name)
    if need and not (d / need).is_dir():
        pytest.skip(f"{d / need} not found (set CELLSEG_DATA)")
    if d.is_dir():
        monkeypatch.setenv("CELLSEG_DATA", str(d))  # the kernel runs in tmp_path: pass the data folder explicitly
    monkeypatch.setenv("CELLSEG_NB_QUICK", "1")  # small settings (the notebooks' default, made explicit)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
