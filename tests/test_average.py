"""Checkpoint weight averaging (SWA) and batch-norm recalibration."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cellseg.models import CellsegModel, make_config  # noqa: E402
from cellseg.representations import get  # noqa: E402
from cellseg.train import average_models, recompute_batchnorm  # noqa: E402

TINY = {"depth": 1, "width": 4, "norm": "batch"}


def _model(seed, norm="batch", rep="flows"):
    return CellsegModel(make_config(get(rep), {**TINY, "norm": norm, "seed": seed}), device="cpu")


def _images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((1, 20 + 4 * i, 18)).astype(np.float32) for i in range(n)]


def test_weights_are_the_mean(tmp_path):
    ms = [_model(s, norm="none") for s in range(3)]
    paths = [m.save(tmp_path / f"m{i}.pt") for i, m in enumerate(ms)]
    avg = average_models(paths)
    for k, v in avg.network.state_dict().items():
        want = sum(m.network.state_dict()[k].double() for m in ms) / 3
        np.testing.assert_allclose(v.numpy(), want.numpy(), rtol=1e-6, atol=1e-7, err_msg=k)
    assert avg.config["training"]["averaged_from"] == [str(p) for p in paths]
    # one model averaged with itself is that model
    x = _images(1)[0]
    same = average_models([ms[0], ms[0]])
    np.testing.assert_allclose(same.predict(x)["flow"], ms[0].predict(x)["flow"], atol=1e-6)


def test_batchnorm_statistics_are_recomputed_from_the_images():
    ms = [_model(s) for s in range(2)]
    for m in ms:  # give the checkpoints different, made-up statistics
        for b in m.network.modules():
            if isinstance(b, torch.nn.BatchNorm2d):
                b.running_mean.fill_(5.0)
                b.running_var.fill_(9.0)
    with pytest.raises(ValueError, match="batch normalization"):
        average_models(ms)
    ims = _images(3)
    avg = average_models(ms, inputs=ims)
    bn = next(b for b in avg.network.modules() if isinstance(b, torch.nn.BatchNorm2d))
    # reference: the first batch-norm layer's input, by a hook, image by image (cropped to div_by)
    seen = []
    h = bn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().double()))
    avg.network.eval()
    with torch.no_grad():
        for im in ims:
            d = avg.div_by
            x = im[:, : im.shape[1] - im.shape[1] % d, : im.shape[2] - im.shape[2] % d]
            avg.network(torch.from_numpy(np.ascontiguousarray(x)[None]))
    h.remove()
    means = torch.stack([t.mean(dim=(0, 2, 3)) for t in seen])
    var_unbiased = torch.stack([t.var(dim=(0, 2, 3), unbiased=True) for t in seen])
    np.testing.assert_allclose(bn.running_mean.numpy(), means.mean(0).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), var_unbiased.mean(0).numpy(), rtol=1e-4, atol=1e-5)
    assert int(bn.num_batches_tracked) == 3 and bn.momentum == 0.1 and not avg.network.training
    assert avg.config["training"]["batchnorm_batches"] == 3
    # deterministic
    again = average_models(ms, inputs=ims)
    np.testing.assert_array_equal(again.network.state_dict()[next(k for k in again.network.state_dict()
                                                                  if k.endswith("running_mean"))].numpy(),
                                  bn.running_mean.numpy())


def test_errors_name_the_file(tmp_path):
    a = _model(0, norm="none").save(tmp_path / "a.pt")
    b = _model(0, norm="none", rep="distance").save(tmp_path / "b.pt")
    with pytest.raises(ValueError, match="b.pt"):
        average_models([a, b])
    with pytest.raises(ValueError, match="at least one"):
        average_models([])
    m = _model(0)
    # a batch (B, C, Y, X) is one batch: its statistics pool its images
    recompute_batchnorm(m, [np.stack([im[:, :16, :16] for im in _images(3)])])
    bn = next(b for b in m.network.modules() if isinstance(b, torch.nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 1
    with pytest.raises(ValueError, match="large enough"):
        recompute_batchnorm(m, [np.zeros((1, 1, 1), np.float32)])
