"""Downloads are tested against small local archives served through file:// URLs (no network)."""
import hashlib
import importlib.util
import json
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import cellseg.datasets.download as dl
from cellseg.datasets import CTCDataset, FolderDataset
from cellseg.datasets.download import ChecksumError, DatasetEntry, DownloadError, Source, download, fetch_file
from cellseg.io import read_image, read_labels

REPO = Path(__file__).resolve().parents[1]


def _sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _tif_bytes(tmp, arr, name):
    p = tmp / name
    tifffile.imwrite(p, arr)
    return p


def _ctc_tree(base: Path, name="Fake-CTC"):
    root = base / name
    for s in ("01", "02"):
        (root / s).mkdir(parents=True)
        (root / f"{s}_GT" / "SEG").mkdir(parents=True)
        for t in range(3):
            tifffile.imwrite(root / s / f"t{t:03d}.tif", np.full((8, 10), t, np.uint8))
        lab = np.zeros((8, 10), np.uint16)
        lab[1:4, 1:4] = 5
        tifffile.imwrite(root / f"{s}_GT" / "SEG" / "man_seg001.tif", lab)
    return root


def _zip_dir(src: Path, zpath: Path, arc_root: Path):
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(src.rglob("*")):
            z.write(p, p.relative_to(arc_root).as_posix())
    return zpath


def _leftovers(folder: Path):
    return [p.name for p in folder.rglob("*") if ".part" in p.name or ".partial" in p.name]


# --------------------------------------------------------------------------- fetch_file


def test_fetch_verifies_known_checksum(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3000))
    dest = tmp_path / "cache" / "f.bin"
    got = fetch_file(src.as_uri(), dest, sha256=_sha(src), progress=False)
    assert got == dest and dest.read_bytes() == src.read_bytes()
    bad = tmp_path / "cache" / "g.bin"
    with pytest.raises(ChecksumError, match="checksum mismatch.*src.bin"):
        fetch_file(src.as_uri(), bad, sha256="0" * 64, progress=False)
    assert not bad.exists() and _leftovers(tmp_path / "cache") == []


def test_fetch_records_unknown_checksum_then_verifies(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"first version" * 100)
    records = tmp_path / "cache" / "checksums.json"
    dest = tmp_path / "cache" / "f.bin"
    msgs = []
    fetch_file(src.as_uri(), dest, None, records, progress=msgs.append)
    assert json.loads(records.read_text()) == {src.as_uri(): _sha(src)}
    assert any("recorded sha256" in m for m in msgs)
    # upstream file changes: the re-download no longer matches the recorded checksum
    src.write_bytes(b"tampered" * 100)
    dest.unlink()
    with pytest.raises(ChecksumError, match="recorded in .*checksums.json"):
        fetch_file(src.as_uri(), dest, None, records, progress=False)
    assert not dest.exists() and _leftovers(tmp_path / "cache") == []


def test_fetch_uses_cache_and_replaces_corrupt_cache(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc" * 1000)
    digest = _sha(src)
    dest = tmp_path / "c" / "f.bin"
    fetch_file(src.as_uri(), dest, digest, progress=False)
    src.unlink()  # the "network" is gone: the cached copy is used
    assert fetch_file(src.as_uri(), dest, digest, progress=False) == dest
    dest.write_bytes(b"corrupt")
    with pytest.raises(DownloadError, match="cannot download"):
        fetch_file(src.as_uri(), dest, digest, progress=False)
    assert not dest.exists()


def test_bad_url_and_bad_checksum_format(tmp_path):
    with pytest.raises(DownloadError, match="cannot download"):
        fetch_file((tmp_path / "missing.zip").as_uri(), tmp_path / "x.zip", progress=False)
    with pytest.raises(ValueError, match="64 lower-case hex"):
        Source("http://x/y.zip", sha256="abc")
    with pytest.raises(ValueError, match="unknown layout"):
        DatasetEntry("x", "weird", (Source("http://x/y.zip"),))


# --------------------------------------------------------------------------- datasets


def test_ctc_zip_download_and_second_call_uses_cache(tmp_path, monkeypatch):
    build = tmp_path / "build"
    _ctc_tree(build)
    z = _zip_dir(build / "Fake-CTC", tmp_path / "Fake-CTC.zip", build)
    entry = DatasetEntry("Fake-CTC", "ctc", (Source(z.as_uri(), _sha(z)),))
    monkeypatch.setenv("CELLSEG_CACHE", str(tmp_path / "cache"))
    out = download(entry, progress=False)
    assert out == tmp_path / "cache" / "datasets" / "Fake-CTC"
    ds = CTCDataset(out)
    assert ds.sequences == ["01", "02"] and [p.t for p in ds.pairs("02", "GT")] == [1]
    assert json.loads((out / "CELLSEG_SOURCE.json").read_text())["layout"] == "ctc"
    z.unlink()
    (tmp_path / "cache" / "downloads" / "Fake-CTC.zip").unlink()
    msgs = []
    assert download(entry, progress=msgs.append) == out  # nothing fetched
    assert any("using cached" in m for m in msgs)
    assert _leftovers(tmp_path / "cache") == []


def test_tar_archive_and_registry_lookup(tmp_path):
    build = tmp_path / "build"
    _ctc_tree(build, "T-CTC")
    tpath = tmp_path / "T-CTC.tar.gz"
    with tarfile.open(tpath, "w:gz") as t:
        t.add(build / "T-CTC", arcname="T-CTC")
    reg = {"T-CTC": DatasetEntry("T-CTC", "ctc", (Source(tpath.as_uri()),))}
    out = download("T-CTC", cache=tmp_path / "c", progress=False, registry=reg)
    assert CTCDataset(out).sequences == ["01", "02"]
    assert (tmp_path / "c" / "checksums.json").is_file()
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*T-CTC"):
        download("nope", cache=tmp_path / "c", registry=reg)


def test_bad_archives_leave_nothing(tmp_path):
    cache = tmp_path / "cache"
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("../evil.txt", "x")
    with pytest.raises(DownloadError, match="unsafe path"):
        download(DatasetEntry("evil", "ctc", (Source(z.as_uri()),)), cache=cache, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    z2 = tmp_path / "empty.zip"
    with zipfile.ZipFile(z2, "w") as f:
        f.writestr("README.txt", "no sequences here")
    with pytest.raises(DownloadError, match="no CTC sequence folders"):
        download(DatasetEntry("empty", "ctc", (Source(z2.as_uri()),)), cache=cache, progress=False)
    assert sorted(p.name for p in (cache / "datasets").iterdir()) == []
    notzip = tmp_path / "not.zip"
    notzip.write_bytes(b"plain bytes")
    with pytest.raises(DownloadError, match="not a zip or tar"):
        download(DatasetEntry("nz", "ctc", (Source(notzip.as_uri()),)), cache=cache, progress=False)


def test_dsb2018_layout(tmp_path):
    build = tmp_path / "b" / "stage1_train"
    rng = np.random.default_rng(0)
    ids = ["aaa", "bbb"]
    for i, sid in enumerate(ids):
        (build / sid / "images").mkdir(parents=True)
        (build / sid / "masks").mkdir()
        g = rng.integers(0, 40, (16, 20), dtype=np.uint8)
        if i == 0:
            img = np.dstack([g, g, g, np.full_like(g, 255)])  # grey stored as RGBA
        else:
            img = np.dstack([g, 255 - g, g // 2, np.full_like(g, 255)])  # colour
        Image.fromarray(img, mode="RGBA").save(build / sid / "images" / f"{sid}.png")
        for k, (y, x) in enumerate([(2, 2), (9, 12), (3, 10)]):
            m = np.zeros((16, 20), np.uint8)
            m[y:y + 4, x:x + 5] = 255
            Image.fromarray(m).save(build / sid / "masks" / f"m{k}.png")
    z = _zip_dir(build, tmp_path / "stage1_train.zip", build.parent)
    out = download(DatasetEntry("dsb", "dsb2018", (Source(z.as_uri()),)), cache=tmp_path / "c", progress=False)
    ds = FolderDataset(out)
    assert ds.names == ids
    lab = read_labels(out / "masks" / "aaa.tif")
    assert lab[3, 3] == 1 and lab[10, 13] == 2 and lab[4, 11] == 3 and len(np.unique(lab)) == 4
    assert (out / "images" / "aaa.png").read_bytes() == (build / "aaa" / "images" / "aaa.png").read_bytes()
    assert FolderDataset.dsb2018(out).names == ["aaa"]
    assert FolderDataset.dsb2018(out, "color (histology/brightfield)").names == ["bbb"]
    assert ds["aaa"].image.ndim == 2


def test_bbbc039_layout(tmp_path):
    b = tmp_path / "b"
    (b / "images").mkdir(parents=True)
    (b / "masks").mkdir()
    (b / "metadata").mkdir()
    img = np.random.default_rng(0).integers(0, 4000, (16, 20), dtype=np.uint16)
    tifffile.imwrite(b / "images" / "IXM_A01.tif", img)
    mask = np.zeros((16, 20, 4), np.uint8)
    mask[..., 3] = 255
    mask[2:6, 2:6, :3] = (255, 0, 0)  # object 1
    mask[2:6, 6:10, :3] = (0, 255, 0)  # touches object 1, other colour
    mask[10:14, 2:6, :3] = (255, 0, 0)  # same colour as object 1, not connected
    Image.fromarray(mask, mode="RGBA").save(b / "masks" / "IXM_A01.png")
    (b / "metadata" / "training.txt").write_text("IXM_A01.png\n")
    zips = []
    for part in ("images", "masks", "metadata"):
        zips.append(_zip_dir(b / part, tmp_path / f"{part}.zip", b))
    entry = DatasetEntry("bb", "bbbc039", tuple(Source(z.as_uri()) for z in zips))
    out = download(entry, cache=tmp_path / "c", progress=False)
    lab = read_labels(out / "masks" / "IXM_A01.tif")
    assert len(np.unique(lab)) == 4 and lab[3, 3] != lab[3, 7] and lab[3, 3] != lab[11, 3]
    assert np.array_equal(read_image(out / "images" / "IXM_A01.tif").data, img)
    assert (out / "metadata" / "training.txt").read_text() == "IXM_A01.png\n"
    assert len(FolderDataset(out)) == 1


def test_registry_entries_are_well_formed():
    names = dl.list_datasets()
    for n in ("DIC-C2DH-HeLa", "Fluo-N2DL-HeLa", "Fluo-N2DH-GOWT1", "PhC-C2DH-U373", "DSB2018-stage1-train", "BBBC039"):
        assert n in names
    for e in dl.REGISTRY.values():
        assert e.sources and e.license and e.citation
        for s in e.sources:
            assert s.url.startswith(("http://", "https://")) and s.name.endswith(".zip")
    assert dl.REGISTRY["DIC-C2DH-HeLa"].sources[0].sha256 is None  # none published: recorded on first download


def test_fetch_script(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("fetch", REPO / "data" / "fetch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["list"]) == 0
    assert "DIC-C2DH-HeLa" in capsys.readouterr().out
    assert mod.main(["no-such-set", "--cache", str(tmp_path)]) == 2
    assert "unknown dataset" in capsys.readouterr().err


@pytest.mark.data
@pytest.mark.slow
def test_dsb_modality_heuristic_matches_shared_index(dsb2018):
    import csv

    rows = list(csv.DictReader(open(dsb2018 / "index.csv")))
    wrong = []
    for r in rows:
        with Image.open(dsb2018 / "images" / f"{r['id']}.png") as im:
            tag, _ = dl.dsb_modality(np.asarray(im))
        if tag != r["kind_heuristic"]:
            wrong.append(r["id"])
    assert wrong == []
