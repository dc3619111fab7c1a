"""Generic losses against values computed by hand on tiny tensors."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from cellseg.train import losses as L  # noqa: E402

LN2, LN3 = math.log(2.0), math.log(3.0)


def t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


# sigmoid(0) = 1/2, sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4
BIN_LOGITS = t([[[0.0, LN3, -LN3]]])  # (B=1, C=1, X=3)
BIN_TARGET = t([[[1.0, 1.0, 0.0]]])


def test_bce_by_hand():
    logits = t([[[0.0, LN3]]])
    target = t([[[1.0, 0.0]]])
    # -ln(1/2) and -ln(1 - 3/4) = ln 4
    assert L.binary_cross_entropy(logits, target).item() == pytest.approx((LN2 + 2 * LN2) / 2, rel=1e-6)
    # pos_weight multiplies the positive term only: (2 ln2 + 2 ln2) / 2
    assert L.binary_cross_entropy(logits, target, pos_weight=2.0).item() == pytest.approx(2 * LN2, rel=1e-6)
    # mask keeps the first pixel only
    assert L.binary_cross_entropy(logits, target, mask=t([[[1.0, 0.0]]])).item() == pytest.approx(LN2, rel=1e-6)


def test_cross_entropy_by_hand():
    # pixel 0: logits (0, 0), class 0 -> ln 2 ; pixel 1: logits (ln3, 0), class 1 -> -ln(1/4) = 2 ln 2
    logits = t([[[0.0, LN3], [0.0, 0.0]]])  # (B=1, C=2, X=2)
    target = t([[0, 1]], torch.int64)
    assert L.cross_entropy(logits, target).item() == pytest.approx(1.5 * LN2, rel=1e-6)
    # class weights (1, 3): (1·ln2 + 3·2ln2) / (1 + 3)
    assert L.cross_entropy(logits, target, weight=[1.0, 3.0]).item() == pytest.approx(7 / 4 * LN2, rel=1e-6)
    assert L.weighted_cross_entropy(logits, target, weight=[1.0, 3.0]).item() == pytest.approx(7 / 4 * LN2, rel=1e-6)
    # mask (B, 1, X) selecting pixel 1
    assert L.cross_entropy(logits, target, mask=t([[[0.0, 1.0]]])).item() == pytest.approx(2 * LN2, rel=1e-6)
    with pytest.raises(ValueError, match="class ids"):
        L.cross_entropy(logits, t([[0, 2]], torch.int64))
    with pytest.raises(TypeError, match="integer"):
        L.cross_entropy(logits, t([[0.0, 1.0]]))


def test_class_weights_and_balanced_ce():
    target = t([[0, 0, 0, 1]], torch.int64)
    # N / (K n_k): 4 / (2·3), 4 / (2·1)
    w = L.class_weights(target, 2, eps=0.0)
    assert w.tolist() == pytest.approx([2 / 3, 2.0])
    # default eps=1: 4/(2·4), 4/(2·2)
    assert L.class_weights(target, 2).tolist() == pytest.approx([0.5, 1.0])
    logits = torch.zeros(1, 2, 4)  # every pixel: ce = ln 2, so any weighting gives ln 2
    assert L.weighted_cross_entropy(logits, target).item() == pytest.approx(LN2, rel=1e-6)
    # non-uniform: class 1 pixel has logits (ln3, 0) -> ce 2 ln2, others ln2 ; weights (1/2, 1)
    logits[0, 0, 3] = LN3
    expected = (3 * 0.5 * LN2 + 1.0 * 2 * LN2) / (3 * 0.5 + 1.0)
    assert L.weighted_cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_soft_dice_by_hand():
    # p = (1/2, 3/4, 1/4), t = (1, 1, 0): Σpt = 5/4, Σp = 3/2, Σt = 2
    assert L.soft_dice_loss(BIN_LOGITS, BIN_TARGET, smooth=0.0).item() == pytest.approx(1 - 2.5 / 3.5, rel=1e-6)
    assert L.soft_dice_loss(BIN_LOGITS, BIN_TARGET, smooth=1.0).item() == pytest.approx(1 - 3.5 / 4.5, rel=1e-6)
    # perfect prediction -> ~0
    assert L.soft_dice_loss(t([[[50.0, 50.0, -50.0]]]), BIN_TARGET, smooth=0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_dice_multiclass_by_hand():
    # pixel 0: logits (0,0) -> p (1/2, 1/2), class 0 ; pixel 1: logits (ln3, 0) -> p (3/4, 1/4), class 1
    logits = t([[[0.0, LN3], [0.0, 0.0]]])
    target = t([[0, 1]], torch.int64)
    d0 = 2 * 0.5 / (1.25 + 1)  # class 0: Σpt = 1/2, Σp = 5/4, Σt = 1
    d1 = 2 * 0.25 / (0.75 + 1)  # class 1: Σpt = 1/4, Σp = 3/4, Σt = 1
    assert L.soft_dice_loss(logits, target, smooth=0.0).item() == pytest.approx(1 - (d0 + d1) / 2, rel=1e-6)


def test_jaccard_by_hand():
    # Σpt / (Σp + Σt - Σpt) = (5/4) / (3/2 + 2 - 5/4) = 5/9
    assert L.jaccard_loss(BIN_LOGITS, BIN_TARGET, smooth=0.0).item() == pytest.approx(4 / 9, rel=1e-6)
    # mask out pixel 1: p = (1/2, ., 1/4), t = (1, ., 0): 0.5 / (0.75 + 1 - 0.5)
    m = t([[[1.0, 0.0, 1.0]]])
    assert L.jaccard_loss(BIN_LOGITS, BIN_TARGET, smooth=0.0, mask=m).item() == pytest.approx(1 - 0.5 / 1.25, rel=1e-6)


def test_focal_by_hand():
    logits = t([[[0.0, LN3]]])
    target = t([[[1.0, 1.0]]])
    # p_t = 1/2 -> (1/2)^2 ln 2 ; p_t = 3/4 -> (1/4)^2 ln(4/3)
    expected = (0.25 * LN2 + 0.0625 * math.log(4 / 3)) / 2
    assert L.focal_loss(logits, target, gamma=2.0).item() == pytest.approx(expected, rel=1e-6)
    assert L.focal_loss(logits, target, gamma=2.0, alpha=0.25).item() == pytest.approx(0.25 * expected, rel=1e-6)
    # negative pixel with alpha: α_t = 1 - α
    neg = L.focal_loss(t([[[-LN3]]]), t([[[0.0]]]), gamma=1.0, alpha=0.25).item()
    assert neg == pytest.approx(0.75 * 0.25 * math.log(4 / 3), rel=1e-6)
    # gamma = 0 is BCE
    assert L.focal_loss(BIN_LOGITS, BIN_TARGET, gamma=0.0).item() == pytest.approx(
        L.binary_cross_entropy(BIN_LOGITS, BIN_TARGET).item(), rel=1e-6)


def test_focal_multiclass_by_hand():
    logits = t([[[LN3], [0.0]]])  # p = (3/4, 1/4)
    assert L.focal_loss(logits, t([[0]], torch.int64), gamma=2.0).item() == pytest.approx(
        0.0625 * math.log(4 / 3), rel=1e-6)
    assert L.focal_loss(logits, t([[1]], torch.int64), gamma=2.0, alpha=[0.1, 0.9]).item() == pytest.approx(
        0.9 * 0.5625 * 2 * LN2, rel=1e-6)


def test_shape_errors():
    with pytest.raises(ValueError, match="differs"):
        L.binary_cross_entropy(torch.zeros(1, 1, 3), torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match="target shape"):
        L.cross_entropy(torch.zeros(1, 2, 3), torch.zeros(1, 4, dtype=torch.int64))


def test_gradients_flow():
    x = torch.zeros(2, 1, 4, 4, requires_grad=True)
    y = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    total = sum(f(x, y) for f in (L.binary_cross_entropy, L.soft_dice_loss, L.jaccard_loss, L.focal_loss))
    total.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


class _NoLossRep:
    name = "nosuchrep"


def test_representation_loss_unknown():
    with pytest.raises(ValueError, match="losses_nosuchrep"):
        L.representation_loss(_NoLossRep())
    with pytest.raises(TypeError):
        L.representation_loss(object())


def test_balanced_bce_by_hand():
    # t = (1, 1, 0), eps = 0: n1 = 2, n0 = 1 -> w1 = 3/4, w0 = 3/2; bce = (ln 2, ln 4/3, ln 4/3)
    expected = (0.75 * LN2 + 0.75 * math.log(4 / 3) + 1.5 * math.log(4 / 3)) / (0.75 + 0.75 + 1.5)
    got = L.balanced_binary_cross_entropy(BIN_LOGITS, BIN_TARGET, eps=0.0).item()
    assert got == pytest.approx(expected, rel=1e-6)
    # balanced classes: the weights are equal and it is the plain BCE
    x, y = t([[[0.3, -1.2, 2.0, 0.1]]]), t([[[1.0, 0.0, 1.0, 0.0]]])
    assert L.balanced_binary_cross_entropy(x, y).item() == pytest.approx(L.binary_cross_entropy(x, y).item(), rel=1e-6)
    # the mask removes pixels from the counts and from the sum: only pixels 0 and 2 (both positive)
    m = t([[[1.0, 0.0, 1.0, 0.0]]])
    assert L.balanced_binary_cross_entropy(x, y, mask=m).item() == pytest.approx(
        L.binary_cross_entropy(x, y, mask=m).item(), rel=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_balanced_bce_is_balanced_two_class_ce(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 5, 6, generator=g, dtype=torch.float64) * 2
    y = (torch.rand(2, 1, 5, 6, generator=g) < 0.2).to(torch.float64)
    two = torch.cat([torch.zeros_like(x), x], dim=1)  # softmax((0, x))[1] = sigmoid(x)
    ref = L.weighted_cross_entropy(two, y[:, 0].long(), weight="balanced")
    assert L.balanced_binary_cross_entropy(x, y).item() == pytest.approx(ref.item(), rel=1e-6)  # float32 weights


@pytest.mark.parametrize("seed", range(4))
def test_binary_losses_match_reference_on_soft_targets(seed):
    """Soft targets in [0, 1] (StarDist's prob target) against the float64 twins."""
    from tests.reference.ref_losses import balanced_bce_ref, bce_ref, dice_ref, focal_ref, jaccard_ref

    g = torch.Generator().manual_seed(seed)
    shape = (2, 1 + seed % 2, 4, 5)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    y = torch.rand(shape, generator=g, dtype=torch.float64) * (torch.rand(shape, generator=g) < 0.4)
    xn, yn = x.numpy(), y.numpy()
    assert L.binary_cross_entropy(x, y).item() == pytest.approx(bce_ref(xn, yn), rel=1e-9)
    assert L.balanced_binary_cross_entropy(x, y).item() == pytest.approx(balanced_bce_ref(xn, yn), rel=1e-9)
    assert L.soft_dice_loss(x, y).item() == pytest.approx(dice_ref(xn, yn), rel=1e-9)
    assert L.soft_dice_loss(x, y, smooth=0.0).item() == pytest.approx(dice_ref(xn, yn, 0.0), rel=1e-9)
    assert L.jaccard_loss(x, y).item() == pytest.approx(jaccard_ref(xn, yn), rel=1e-9)
    assert L.focal_loss(x, y).item() == pytest.approx(focal_ref(xn, yn), rel=1e-9)
    assert L.focal_loss(x, y, gamma=1.5, alpha=0.25).item() == pytest.approx(focal_ref(xn, yn, 1.5, 0.25), rel=1e-9)


def test_head_loss_registry():
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = (x > 0.3).float()
    assert L.head_loss_fn("default") is None
    for name, fn in L.HEAD_LOSSES.items():
        assert L.head_loss_fn(name) is fn
    both = L.head_loss_fn("bce+dice")(x, y)
    assert both.item() == pytest.approx((L.binary_cross_entropy(x, y) + L.soft_dice_loss(x, y)).item(), rel=1e-6)
    for bad in ("nope", "bce+bce", "bce+", "default+dice", "", None, "BCE"):
        with pytest.raises(ValueError, match="weighted_bce, dice, focal, soft_iou"):
            L.head_loss_fn(bad)


def test_every_representation_has_a_registered_loss():
    import importlib

    from cellseg.representations._params import representation_classes

    assert {c.name for c in representation_classes().values()} <= set(L.REPRESENTATION_LOSSES)
    for name, modname in L.REPRESENTATION_LOSSES.items():
        assert callable(importlib.import_module(modname).loss), name
