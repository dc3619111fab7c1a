import numpy as np
import pytest

from cellseg.preprocess import EmptyImageError, normalize_percentile, pad_to_multiple


def test_percentiles_map_to_zero_and_one():
    rng = np.random.default_rng(0)
    x = rng.normal(33000, 500, size=(64, 80)).astype(np.uint16)
    y = normalize_percentile(x, 1, 99.8)
    assert y.dtype == np.float32 and y.shape == x.shape
    lo, hi = np.percentile(x.astype(np.float32), [1, 99.8])
    assert np.allclose(y, (x - lo) / (hi - lo), atol=1e-5)
    assert abs(np.percentile(y, 1)) < 1e-5 and abs(np.percentile(y, 99.8) - 1) < 1e-5
    assert y.min() < 0 and y.max() > 1  # not clipped by default
    yc = normalize_percentile(x, clip=True)
    assert yc.min() == 0 and yc.max() == 1


def test_same_result_whatever_the_dtype():
    rng = np.random.default_rng(1)
    x = rng.integers(10, 200, size=(32, 32))
    ref = normalize_percentile(x.astype(np.float32))
    for dt in (np.uint8, np.uint16, np.int32, np.float64):
        assert np.allclose(normalize_percentile(x.astype(dt)), ref, atol=1e-6)


def test_per_channel_axis():
    rng = np.random.default_rng(2)
    x = np.stack([rng.random((16, 16)), 1000 + 50 * rng.random((16, 16))])
    y = normalize_percentile(x, 0, 100, axis=(1, 2))
    assert np.allclose(y.min(axis=(1, 2)), 0) and np.allclose(y.max(axis=(1, 2)), 1)
    glob = normalize_percentile(x, 0, 100)
    assert glob[0].max() < 0.01


def test_constant_image_raises_clear_error():
    with pytest.raises(EmptyImageError, match="t007.tif: image is constant"):
        normalize_percentile(np.full((10, 10), 7, np.uint16), name="t007.tif")
    with pytest.raises(EmptyImageError, match="1 of 2 normalization groups"):
        normalize_percentile(np.stack([np.zeros((4, 4)), np.eye(4)]), 0, 100, axis=(1, 2))
    with pytest.raises(EmptyImageError, match="empty"):
        normalize_percentile(np.zeros((0, 3)))


def test_sparse_signal_keeps_the_maximum():
    x = np.zeros((100, 100), np.float32)
    x[50, 50] = 10.0  # 0.01 % of the pixels: both percentiles are 0
    y = normalize_percentile(x)
    assert y[50, 50] == pytest.approx(1.0) and y[0, 0] == 0.0


@pytest.mark.parametrize("kw,match", [(dict(pmin=50, pmax=10), "pmin < pmax"), (dict(pmax=101), "pmax <= 100"),
                                      (dict(axis=5), "out of range"), (dict(eps=-1), "eps")])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        normalize_percentile(np.arange(16.0).reshape(4, 4), **kw)


def test_nan_and_bad_dtype():
    x = np.arange(16.0).reshape(4, 4)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        normalize_percentile(x)
    with pytest.raises(ValueError, match="cannot normalize"):
        normalize_percentile(np.ones((3, 3), bool))


@pytest.mark.parametrize("mode", ["reflect", "symmetric", "edge", "constant"])
def test_pad_to_multiple(mode):
    x = np.arange(5 * 7 * 3).reshape(5, 7, 3).astype(np.float32)
    p, crop = pad_to_multiple(x, 4, axes=(0, 1), mode=mode)
    assert p.shape == (8, 8, 3)
    assert np.array_equal(p[crop], x)
    if mode == "reflect":
        assert np.array_equal(p[5, :7], x[3]) and np.array_equal(p[6, :7], x[2]) and np.array_equal(p[:5, 7], x[:, 5])
    if mode == "constant":
        assert (p[5:] == 0).all()
    q, crop2 = pad_to_multiple(x, (1, 16), axes=(0, 1))
    assert q.shape == (5, 16, 3) and np.array_equal(q[crop2], x)


def test_pad_large_reflect_and_noop():
    x = np.arange(3.0)
    p, crop = pad_to_multiple(x, 16)
    assert p.shape == (16,) and np.array_equal(p[crop], x)
    y = np.ones((8, 8))
    q, crop = pad_to_multiple(y, 8)
    assert q is y and q[crop].shape == (8, 8)


@pytest.mark.parametrize("kw,match", [(dict(multiple=0), "positive"), (dict(multiple=(2, 2, 2)), "3 multiples"),
                                      (dict(multiple=2, mode="wrap"), "unknown pad mode"),
                                      (dict(multiple=2, axes=(3,)), "out of range")])
def test_pad_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        pad_to_multiple(np.ones((3, 5)), **kw)
    with pytest.raises(ValueError, match="mode='edge'"):
        pad_to_multiple(np.ones((1, 5)), 4)


def test_huge_finite_float64_values_are_normalized_not_called_infinite():
    # issue 14, item 9: 1e302 is finite; float32 cannot hold it, float64 can
    rng = np.random.default_rng(3)
    x = rng.random((32, 32))
    y = normalize_percentile(x * 1e302)
    assert y.dtype == np.float32 and np.isfinite(y).all()
    assert np.allclose(y, normalize_percentile(x), atol=1e-5)
    x[0, 0] = np.inf
    with pytest.raises(ValueError) as info:
        normalize_percentile(x)
    assert str(info.value) == "image: contains NaN or infinite values"  # "image" once
