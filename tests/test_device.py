"""Device choice: auto/cpu work here; a device the machine lacks is a clear error, never a torch traceback."""
import numpy as np
import pytest
import torch

from cellseg.cli import main
from cellseg.io import write_image
from cellseg.models.network import resolve_device


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    assert resolve_device(None) == auto
    with pytest.raises(ValueError, match="unknown device 'gpu0'.*this machine has: cpu"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available.*use --device cpu"):
            resolve_device("cuda:1")
    mps = getattr(torch.backends, "mps", None)
    if not (mps is not None and mps.is_available()):
        with pytest.raises(ValueError, match="MPS is not available"):
            resolve_device("mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_refuses_an_absent_device_before_any_work(tiny_model_path, tmp_path, capsys):
    img = (np.random.default_rng(0).random((32, 32)) * 1000).astype(np.uint16)
    write_image(tmp_path / "in" / "a.tif", img, "YX")
    rc = main(["segment", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--model", str(tiny_model_path), "-q",
               "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and "CUDA is not available" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    rc = main(["train", "-r", "distance", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.pt"),
               "--device", "mps"])
    err = capsys.readouterr().err
    assert rc == 2 and "--device" in err and "Traceback" not in err


def test_cli_segments_on_the_cpu(tiny_model_path, tmp_path, capsys):
    from cellseg.datasets.synthetic import synthetic_cells

    img, _ = synthetic_cells((64, 64), n_cells=4, seed=1)
    write_image(tmp_path / "in" / "a.tif", (img * 1000).astype(np.uint16), "YX")
    rc = main(["segment", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--model", str(tiny_model_path), "-q",
               "--device", "cpu"])
    assert rc == 0, capsys.readouterr()
    assert (tmp_path / "o" / "a_labels.tif").exists()
