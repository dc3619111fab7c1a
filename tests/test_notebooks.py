"""Every notebook in notebooks/ runs end to end (nbclient, a real Jupyter kernel)."""
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
NEEDS_DATA = {"04_cell_tracking_challenge.ipynb": "Fluo-N2DL-HeLa"}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from cellseg.models import list_models

    if not list_models():
        pytest.skip("no bundled model yet: the notebooks segment with the default model")
    need = NEEDS_DATA.get(path.name)
    if need:
        from tests.conftest import cellseg_data_dir

        d = cellseg_data_dir()
        if not (d / need).is_dir():
            pytest.skip(f"{d / need} not found (set CELLSEG_DATA)")
        monkeypatch.setenv("CELLSEG_DATA", str(d))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
