"""Registry of bundled pretrained models (no downloads, ever).

The entries live in ``cellseg/models/weights/registry.json``, shipped with the
package next to the weight files and their model cards::

    {"registry_version": 1,
     "models": {
       "nuclei-stardist": {
         "file": "nuclei-stardist.pt",        # a CellsegModel file in weights/
         "sha256": "…",                        # checked before every load
         "card": "nuclei-stardist.md",        # model card (data, terms, split, test figures)
         "summary": "StarDist rays, fluorescence nuclei (DSB 2018)",
         "representation": "stardist",
         "default": true                       # optional: the model `cellseg segment` uses by default
       }}}

Add an entry with :func:`register_model` (or ``python -m cellseg.models.registry
add MODEL.pt --name NAME --card CARD.md --summary TEXT``), which stores the
weights as float16, computes the hash and updates the JSON file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .._files import atomic_write
from .bundled import WEIGHTS_DIR

__all__ = [
    "WEIGHTS_DIR",
    "UnknownModelError",
    "list_models",
    "model_info",
    "model_card",
    "load_pretrained",
    "default_model_name",
    "register_model",
    "sha256sum",
]

_INDEX = "registry.json"
_REGISTRY_VERSION = 1


class UnknownModelError(ValueError):
    """Unknown bundled model name (the message lists the bundled ones)."""


def _index_path(weights_dir: Path | None) -> Path:
    return Path(weights_dir or WEIGHTS_DIR) / _INDEX


def _read_index(weights_dir: Path | None = None) -> dict[str, Any]:
    p = _index_path(weights_dir)
    if not p.exists():
        return {"registry_version": _REGISTRY_VERSION, "models": {}}
    try:
        data = json.loads(p.read_text())
    except ValueError as exc:
        raise ValueError(f"{p}: the model registry is not valid JSON ({exc})") from None
    if data.get("registry_version") != _REGISTRY_VERSION or not isinstance(data.get("models"), dict):
        raise ValueError(f"{p}: unsupported model registry (need registry_version {_REGISTRY_VERSION} and 'models')")
    return data


def list_models(weights_dir: Path | None = None) -> list[str]:
    """Names of the bundled models."""
    return sorted(_read_index(weights_dir)["models"])


def _entry(name: str, weights_dir: Path | None) -> dict[str, Any]:
    models = _read_index(weights_dir)["models"]
    if name not in models:
        have = ", ".join(sorted(models)) or "none"
        raise UnknownModelError(f"unknown model {name!r}; bundled models: {have} (or pass a path to a .pt model file)")
    return dict(models[name])


def model_info(name: str, weights_dir: Path | None = None) -> dict[str, Any]:
    """The registry entry of ``name`` with absolute ``path`` and ``card_path``."""
    e = _entry(name, weights_dir)
    d = Path(weights_dir or WEIGHTS_DIR)
    e["name"] = name
    e["path"] = str(d / e["file"])
    e["card_path"] = str(d / e["card"]) if e.get("card") else None
    return e


def model_card(name: str, weights_dir: Path | None = None) -> str:
    """The text of the model card of ``name``."""
    info = model_info(name, weights_dir)
    if not info["card_path"] or not Path(info["card_path"]).exists():
        raise FileNotFoundError(f"model {name!r} has no model card at {info['card_path']}")
    return Path(info["card_path"]).read_text()


def default_model_name(weights_dir: Path | None = None) -> str:
    """The entry marked ``default``, else ``nuclei-stardist``, else the first bundled model."""
    models = _read_index(weights_dir)["models"]
    if not models:
        raise UnknownModelError("no bundled models are installed; pass --model PATH to a .pt model file")
    for n, e in sorted(models.items()):
        if e.get("default"):
            return n
    return "nuclei-stardist" if "nuclei-stardist" in models else sorted(models)[0]


def sha256sum(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of the file at ``path``, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_pretrained(name: str, device: Any = "auto", weights_dir: Path | None = None):
    """Load a bundled model by name after checking its sha256."""
    from .model import CellsegModel  # here: listing the bundled models does not import torch

    info = model_info(name, weights_dir)
    path = Path(info["path"])
    if not path.exists():
        raise FileNotFoundError(f"bundled model {name!r}: weights file {path} is missing from the installation")
    digest = sha256sum(path)
    if digest != info.get("sha256"):
        raise ValueError(
            f"bundled model {name!r}: {path} has sha256 {digest}, the registry expects {info.get('sha256')} "
            "(corrupted or replaced file)"
        )
    model = CellsegModel.load(path, device=device)
    config = model.config
    config.setdefault("name", name)
    if info.get("object_size") and not config.get("object_size"):
        # measured after the weights were stored: the registry carries it
        config["object_size"] = {k: v for k, v in info["object_size"].items() if k != "measured"}
    if info.get("image_stats") and not config.get("image_stats"):
        config["image_stats"] = dict(info["image_stats"])
    if info.get("objects") and not config.get("objects"):
        config["objects"] = str(info["objects"])
    return model


def register_model(
    model_path: str | os.PathLike,
    name: str,
    card: str | os.PathLike | None = None,
    summary: str = "",
    default: bool = False,
    half: bool = True,
    weights_dir: Path | None = None,
) -> dict[str, Any]:
    """Copy a trained model into the weights folder (float16 by default) and add its registry entry.

    Replacing a model under its own name keeps what the registry carries for it and the new
    model's config lacks (``object_size``, ``image_stats``, ``objects``: they describe the training data),
    and keeps it the default model when it was. ``card`` may be the bundled card itself (edited
    in place). The card is checked before anything is written.
    """
    from .model import CellsegModel  # here: listing the bundled models does not import torch

    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise ValueError(f"invalid model name {name!r}")
    d = Path(weights_dir or WEIGHTS_DIR)
    card_target = d / f"{name}.md"
    if card is not None:
        card = Path(card)
        if not card.is_file():
            raise FileNotFoundError(f"model card {card} does not exist")
    model = CellsegModel.load(model_path, device="cpu")
    model.config["name"] = name
    d.mkdir(parents=True, exist_ok=True)
    index = _read_index(d)
    previous = index["models"].get(name, {})
    target = d / f"{name}.pt"
    model.save(target, half=half)
    entry: dict[str, Any] = {
        "file": target.name,
        "sha256": sha256sum(target),
        "summary": summary,
        "representation": model.representation.name,
    }
    for key in ("object_size", "image_stats", "objects"):
        if previous.get(key) and not model.config.get(key):
            entry[key] = previous[key]
    if card is not None:
        if not (card_target.exists() and card.resolve() == card_target.resolve()):
            shutil.copyfile(card, card_target)
        entry["card"] = card_target.name
    if default or previous.get("default"):
        entry["default"] = True
    if default:
        for e in index["models"].values():
            e.pop("default", None)
    index["models"][name] = entry
    text = json.dumps(index, indent=2, sort_keys=True) + "\n"
    atomic_write(_index_path(d), lambda tmp: tmp.write_text(text))
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cellseg.models.registry", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add", help="add a trained model file to the bundled weights")
    a.add_argument("model", help="model .pt file (e.g. OUT/model.pt written by a recipe)")
    a.add_argument("--name", required=True)
    a.add_argument("--card", default=None, help="model card (markdown)")
    a.add_argument("--summary", default="")
    a.add_argument("--default", action="store_true")
    a.add_argument("--float32", action="store_true", help="keep float32 weights (default float16)")
    sub.add_parser("list", help="list the bundled models")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for n in list_models():
            print(f"{n:24s} {model_info(n).get('summary', '')}")
        return 0
    try:
        e = register_model(args.model, args.name, card=args.card, summary=args.summary,
                           default=args.default, half=not args.float32)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({args.name: e}, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
