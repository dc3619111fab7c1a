"""Recipes of the bundled models: fixed splits without leaks, and a smoke run on the real data."""
from __future__ import annotations

import json

import pytest

from cellseg.train import recipes


def test_recipe_table():
    names = recipes.list_recipes()
    for rep in ("stardist", "flows", "distance", "offsets"):
        assert f"nuclei-{rep}" in names and f"hela-dic-{rep}" in names
        assert recipes.get_recipe(f"nuclei-{rep}").representation == rep
    with pytest.raises(ValueError, match="unknown recipe"):
        recipes.get_recipe("nuclei-unet")
    # every recipe's patch size fits its backbone
    for n in names:
        r = recipes.get_recipe(n)
        assert r.train["patch_size"] % 2 ** r.backbone["depth"] == 0


def test_missing_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("CELLSEG_DATA", raising=False)
    with pytest.raises(ValueError, match="data-root"):
        recipes.prepare_data(recipes.get_recipe("nuclei-distance"))
    with pytest.raises(FileNotFoundError):
        recipes.prepare_data(recipes.get_recipe("nuclei-distance"), tmp_path / "nope")


@pytest.mark.data
def test_dsb_split_is_fixed_and_disjoint(dsb2018):
    from cellseg.datasets import FolderDataset

    ds = FolderDataset.dsb2018(dsb2018, modality="fluorescence")
    rest, test = ds.split(0.1, seed=recipes.DSB_TEST_SEED)
    train, val = ds.subset(rest).split(0.1, seed=recipes.DSB_VAL_SEED)
    assert len(test) == round(0.1 * len(ds.names))
    assert not set(test) & set(rest) and not set(train) & set(val)
    assert sorted(train + val + test) == sorted(ds.names)
    # prepare_data uses exactly this split (checked on 4 images per split to keep it fast)
    _, _, _, split = recipes.prepare_data(recipes.get_recipe("nuclei-stardist"), dsb2018.parent, max_images=4)
    assert split["test"] == sorted(test)[:4] and split["val"] == sorted(val)[:4] and split["train"] == sorted(train)[:4]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Smoke runs of recipes, each trained once for the module: name -> (folder, metrics)."""
    done = {}

    def get(name, data_dir):
        if name not in done:
            out = tmp_path_factory.mktemp(name)
            done[name] = out, recipes.run_recipe(name, out, data_root=data_dir, smoke=True, threads=1, verbose=False)
        return done[name]

    return get


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("name", ["nuclei-distance", "hela-dic-distance"])
def test_recipe_smoke_run(name, data_dir, smoke_runs):
    torch = pytest.importorskip("torch")  # noqa: F841
    tmp_path, metrics = smoke_runs(name, data_dir)
    for key in ("ap50", "ap75", "ap90", "map_50_95", "f1_50", "seg"):
        assert 0.0 <= metrics[key] <= 1.0 or metrics[key] != metrics[key]
    split = json.loads((tmp_path / "split.json").read_text())
    assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
    card = (tmp_path / "MODEL_CARD.md").read_text()
    assert "SMOKE RUN" in card and "## Test results" in card
    assert ("Caicedo" in card) if name.startswith("nuclei") else ("Maška" in card)
    from cellseg.models import CellsegModel

    m = CellsegModel.load(tmp_path / "model.pt")
    assert m.config["training"]["test"]["n_images"] == len(split["test"])
    assert m.config["training"]["recipe"] == name


@pytest.mark.data
@pytest.mark.slow
def test_recipe_average_smoke_run(data_dir, tmp_path, smoke_runs):
    """Checkpoint averaging through the recipe: BN statistics from the training split,
    tuned (with the augmentation decision), tested and carded."""
    torch = pytest.importorskip("torch")  # noqa: F841
    name = "nuclei-distance"
    run, _ = smoke_runs(name, data_dir)
    out = tmp_path / "avg"
    rc = recipes.main([name, "--data-root", str(data_dir), "--out", str(out), "--smoke",
                       "--average", str(run / "best.pt"), str(run / "last.pt")])
    assert rc == 0
    from cellseg.models import CellsegModel

    m = CellsegModel.load(out / "model.pt")
    tr = m.config["training"]
    assert tr["averaged_from"] == [str(run / "best.pt"), str(run / "last.pt")]
    assert tr["averaged_epochs"] == [1, 1] and tr["batchnorm_batches"] == 2
    assert set(tr["tuning"]["augment_scores"]) == {"plain", "augmented"}
    assert isinstance(m.config.get("augment"), bool)
    card = (out / "MODEL_CARD.md").read_text()
    assert "the mean of 2 checkpoints" in card and "test-time augmentation" in card and "SMOKE RUN" in card
    assert recipes.main([name, "--out", str(out), "--average", str(tmp_path / "nope.pt")]) == 2


def test_model_card_command_reproduces_schedule_overrides():
    from cellseg.train.recipes import _overrides, get_recipe

    r = get_recipe("nuclei-flows")
    assert _overrides(r, dict(r.train)) == ""
    tc = dict(r.train, epochs=25, tune_time_limit=240.0)
    assert _overrides(r, tc) == " --epochs 25 --tune-time-limit 240"


def test_module_command_runs_through_the_forwarding_module(tmp_path):
    """``python -m cellseg.models.recipes`` (the command the model cards give) still runs the
    recipes, which live in cellseg.train.recipes: without arguments it lists them, and an unknown
    recipe is a one-line error."""
    import subprocess
    import sys

    run = [sys.executable, "-m", "cellseg.models.recipes"]
    out = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    assert names == recipes.list_recipes()
    bad = subprocess.run([*run, "no-such-recipe", "--out", str(tmp_path / "o")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "no-such-recipe" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.data
@pytest.mark.slow
def test_recipe_init_starts_from_a_models_weights(data_dir, tmp_path, smoke_runs):
    """--init: a new run of the recipe from a model's weights (here the smoke run's own model), checked
    against the recipe's network first; --init with --resume, or a model of another network, is refused."""
    torch = pytest.importorskip("torch")
    from cellseg.models import CellsegModel

    name = "nuclei-distance"
    run, _ = smoke_runs(name, data_dir)
    start = CellsegModel.load(run / "model.pt")
    seen = []
    import cellseg.train as train_pkg  # run_recipe imports fit from here when it runs: record what it gets

    orig = train_pkg.fit

    def spy(*a, **k):
        m = k.get("model")
        seen.append(None if m is None else {n: p.detach().clone() for n, p in m.network.state_dict().items()})
        return orig(*a, **k)

    train_pkg.fit = spy
    try:
        rc = recipes.main([name, "--data-root", str(data_dir), "--out", str(tmp_path / "init"), "--smoke",
                           "--init", str(run / "model.pt")])
    finally:
        train_pkg.fit = orig
    assert rc == 0 and seen and seen[0] is not None
    for k, v in start.network.state_dict().items():  # the run started from those weights
        assert torch.equal(seen[0][k], v), k
    m = CellsegModel.load(tmp_path / "init" / "model.pt")
    assert m.config["training"]["init"] == str(run / "model.pt") and "fine_tuned_from" in m.config["training"]
    assert m.config["image_stats"]["n_images"] == start.config["image_stats"]["n_images"]
    assert recipes.main([name, "--data-root", str(data_dir), "--out", str(tmp_path / "x"), "--smoke",
                         "--init", str(run / "model.pt"), "--resume"]) == 2
    assert recipes.main(["hela-dic-flows", "--data-root", str(data_dir), "--out", str(tmp_path / "y"), "--smoke",
                         "--init", str(run / "model.pt")]) == 2
