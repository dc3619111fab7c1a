r"""Weight averaging of checkpoints (Izmailov et al. 2018, "Averaging weights leads to wider
optima and better generalization", SWA).

Checkpoints of one training run taken late in its schedule (after the learning rate has
come down, or at the ends of warm restarts) lie in one basin; the mean of their weights
often generalises better than any one of them. Batch-norm running statistics are not
weights: the mean of the checkpoints' statistics is not the statistics of the averaged
network, so :func:`average_models` recomputes them from training inputs
(:func:`recompute_batchnorm`: every batch once, in the network's training mode, without
gradients; each batch weighs the same, as ``torch.optim.swa_utils.update_bn`` does with
``momentum=None``). The inputs should look like what the network was trained on: the
recipes feed batches of augmented patches from the training sampler (whole images, with
far more background than the foreground-favouring patches, give other statistics and a
worse model).

Command line (through the recipes)::

    python -m cellseg.models.recipes nuclei-flows --data-root DATA --out OUT \
        --average RUN/best.pt RUN/last.pt ...
"""
from __future__ import annotations

import copy
import os
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["average_models", "recompute_batchnorm", "has_batchnorm"]


def _load(m: Any, device: str):
    from cellseg.models.network import CellsegModel, load_model

    if isinstance(m, CellsegModel):
        return m, getattr(m, "name", None) or "model"
    return load_model(m, device=device), str(m)


def _same_architecture(a: dict, b: dict) -> bool:
    def arch(bb):  # the initialisation seed does not change the architecture
        return {k: v for k, v in bb.items() if k != "seed"}

    return arch(a["backbone"]) == arch(b["backbone"]) and a["representation"] == b["representation"] \
        and a["in_channels"] == b["in_channels"]


def has_batchnorm(network) -> bool:
    """Whether ``network`` has batch-norm layers (whose statistics averaging invalidates)."""
    import torch

    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in network.modules())


def recompute_batchnorm(model, inputs: Iterable[np.ndarray]) -> int:
    """Reset and recompute the running mean/variance of every batch-norm layer of
    ``model.network`` from ``inputs``: normalized float arrays, each one image
    ``(C, *spatial)`` or one batch ``(B, C, *spatial)`` (cropped at the end of each spatial
    axis to a multiple of ``model.div_by``); each array is one batch and all batches weigh
    the same. Returns the number of batches used; the network is left in eval mode."""
    import torch

    net = model.network
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    saved = [b.momentum for b in bns]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # cumulative average over the batches seen
    d = model.div_by
    n = 0
    net.train()
    try:
        with torch.no_grad():
            for arr in inputs:
                x = np.asarray(arr, np.float32)
                if x.ndim == model.ndim:
                    x = x[None]
                if x.ndim == model.ndim + 1:
                    x = x[None]
                crop = (slice(None), slice(None)) + tuple(slice(0, s - s % d) for s in x.shape[2:])
                x = x[crop]
                if min(x.shape[2:]) < d:
                    continue  # smaller than one network cell: nothing to learn from
                net(torch.from_numpy(np.ascontiguousarray(x)).to(model.device))
                n += 1
    finally:
        for b, m in zip(bns, saved):
            b.momentum = m
        net.eval()
    if n == 0:
        raise ValueError("no input was large enough to recompute the batch-norm statistics")
    return n


def average_models(models: Sequence[Any], inputs: Iterable[np.ndarray] | None = None,
                   device: str = "cpu"):
    """A model whose floating weights are the mean of ``models``' (model files, bundled
    names or :class:`~cellseg.models.CellsegModel`; same backbone, representation and input
    channels). Its config (thresholds, normalization, training record) is the first
    model's, with ``training["averaged_from"]`` listing the sources. Batch-norm statistics
    are recomputed from ``inputs`` (images or batches, see :func:`recompute_batchnorm`;
    required when the network has batch norm)."""
    if len(models) < 1:
        raise ValueError("average_models needs at least one model")
    loaded = [_load(m, device) for m in models]
    first, first_src = loaded[0]
    for m, src in loaded[1:]:
        if not _same_architecture(first.config, m.config):
            raise ValueError(f"{src}: its backbone/representation/input channels differ from {first_src}'s; "
                             "only checkpoints of one architecture can be averaged")
    out = copy.deepcopy(first)
    states = [m.network.state_dict() for m, _ in loaded]
    avg = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            acc = v.detach().clone().double()
            for s in states[1:]:
                acc += s[k].double()
            avg[k] = (acc / len(states)).to(v.dtype)
        else:
            avg[k] = v.clone()
    out.network.load_state_dict(avg)
    n_bn = 0
    if has_batchnorm(out.network):
        if inputs is None:
            raise ValueError("the network has batch normalization: pass training inputs to recompute its "
                             "statistics (the mean of the checkpoints' statistics does not describe the average)")
        n_bn = recompute_batchnorm(out, inputs)
    tr = out.config.setdefault("training", {})
    tr["averaged_from"] = [os.fspath(src) for _, src in loaded]
    if n_bn:
        tr["batchnorm_batches"] = n_bn
    return out
