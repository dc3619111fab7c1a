"""Augmentation keeps labels integer and aligned with the image."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cellseg.train.augment import AugmentConfig, augment_intensity, augment_pair, sample_patch


def _blobs(shape=(64, 64), seed=0):
    from cellseg.datasets.synthetic import synthetic_cells

    _, labels = synthetic_cells(shape, n_cells=12, seed=seed)
    return labels.astype(np.int32)


GEOM = AugmentConfig(rotate_prob=1.0, scale_prob=1.0, elastic_prob=1.0, intensity_prob=0.0,
                     noise_prob=0.0, blur_prob=0.0)


@pytest.mark.parametrize("seed", range(5))
def test_image_equal_to_labels_stays_equal(seed):
    labels = _blobs(seed=seed)
    image = labels[None].astype(np.float32)
    rng = np.random.default_rng(seed)
    cfg = AugmentConfig(**{**GEOM.to_dict(), "image_order": 0})
    img, lab = augment_pair(image, labels, rng, cfg, patch_shape=(48, 40), center=(29.5, 32.5))
    assert lab.dtype == np.int32 and lab.shape == (48, 40) and img.shape == (1, 48, 40)
    # same coordinates, same nearest neighbour: exactly equal
    np.testing.assert_array_equal(img[0], lab)
    # the transform did something and only existing ids appear
    assert not np.array_equal(lab, labels[30 - 24:30 + 24, 33 - 20:33 + 20])
    assert set(np.unique(lab)) <= set(np.unique(labels))


@pytest.mark.parametrize("seed", range(4))
def test_linear_image_agrees_with_nearest_labels_away_from_edges(seed):
    labels = _blobs(seed=seed)
    # channel 1 marks input pixels with a differently labelled 8-neighbour (label edges)
    edge = (ndi.maximum_filter(labels, 3) != ndi.minimum_filter(labels, 3)).astype(np.float32)
    image = np.stack([labels.astype(np.float32), edge])
    img, lab = augment_pair(image, labels, np.random.default_rng(100 + seed), GEOM,
                            patch_shape=(32, 32), center=(31.5, 31.5))
    differ = np.abs(img[0] - lab) > 1e-4
    # linear interpolation differs from nearest only inside a non-uniform 2x2 input cell, whose
    # four corners are all edge pixels, so the interpolated edge channel is exactly 1 there
    assert differ.any() and (img[1] < 1e-4).mean() > 0.3  # the check is not vacuous
    assert np.all(img[1][differ] > 1 - 1e-4), "image and labels disagree away from label edges"
    assert (lab > 0).mean() > 0.1


def test_flips_and_rot90_are_exact_permutations():
    labels = _blobs(seed=3)
    image = np.stack([labels, labels * 2]).astype(np.float32)
    cfg = AugmentConfig.none()
    cfg = AugmentConfig(**{**cfg.to_dict(), "flip": True, "rot90": True})
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(20):
        img, lab = augment_pair(image, labels, rng, cfg)
        np.testing.assert_array_equal(img[0], lab)
        np.testing.assert_array_equal(img[1], 2 * lab)
        # a signed permutation of the pixels: same histogram, some dihedral transform of the input
        cands = [np.rot90(f, k) for f in (labels, labels[::-1]) for k in range(4)]
        idx = [i for i, c in enumerate(cands) if np.array_equal(c, lab)]
        assert idx, "result is not a flip/rotation of the input"
        seen.add(idx[0])
    assert len(seen) >= 4


def test_no_rng_is_plain_crop():
    labels = _blobs()
    image = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32)
    img, lab = sample_patch(image, labels, (16, 20), center=(2 + 7.5, 20 + 9.5))
    np.testing.assert_array_equal(lab, labels[2:18, 20:40])
    np.testing.assert_array_equal(img, image[:, 2:18, 20:40])
    # outside the image: zeros
    img, lab = sample_patch(image, labels, (16, 16), center=(-0.5, -0.5))
    assert np.all(lab[:8] == 0) and np.all(img[:, :, :8] == 0)
    np.testing.assert_array_equal(lab[8:, 8:], labels[:8, :8])


def test_3d_alignment():
    rng = np.random.default_rng(0)
    labels = np.zeros((16, 32, 32), np.int32)
    labels[4:10, 5:15, 6:20] = 3
    labels[8:14, 18:28, 10:25] = 7
    image = labels[None].astype(np.float32)
    cfg = AugmentConfig(**{**GEOM.to_dict(), "image_order": 0})
    img, lab = augment_pair(image, labels, rng, cfg, patch_shape=(12, 24, 24), center=(8, 16, 16))
    assert lab.shape == (12, 24, 24) and lab.dtype == np.int32
    np.testing.assert_array_equal(img[0], lab)
    assert set(np.unique(lab)) <= {0, 3, 7} and (lab > 0).any()


def test_intensity_changes_image_only_and_is_seeded():
    x = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    cfg = AugmentConfig(intensity_prob=1.0, noise_prob=1.0, blur_prob=1.0)
    a = augment_intensity(x, np.random.default_rng(5), cfg)
    b = augment_intensity(x, np.random.default_rng(5), cfg)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == x.shape and not np.allclose(a, x)
    assert np.array_equal(augment_intensity(x, np.random.default_rng(5), AugmentConfig.none()), x)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentConfig.from_dict({"flipp": True})
    with pytest.raises(ValueError, match="rotate_prob"):
        AugmentConfig(rotate_prob=2.0)
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(0.0, 1.0))
    assert AugmentConfig.from_dict(AugmentConfig().to_dict()) == AugmentConfig()
