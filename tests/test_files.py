"""cellseg._files: the one atomic writer (outputs get the mode a plain write gives) and the
check of an output folder."""
from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pytest

from cellseg._files import OutputError, atomic_write, check_output_dir


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _plain_mode(tmp_path, umask) -> int:
    """What open(path, 'w') gives under this umask."""
    with open(tmp_path / ".plain", "w"):
        pass
    m = _mode(tmp_path / ".plain")
    os.unlink(tmp_path / ".plain")
    assert m == 0o666 & ~umask
    return m


def _hidden(folder):
    return sorted(p.name for p in folder.rglob(".*"))


def test_every_output_gets_the_mode_of_a_plain_write(tmp_path, umask):
    """Label TIFF, CSV, PNG overlay, CTC masks and the block-wise TIFF: 0o666 & ~umask
    (mkstemp gave the CSV and the PNG 0o600)."""
    from cellseg.datasets.ctc import write_result
    from cellseg.io import write_image, write_labels
    from cellseg.measure import object_table, write_csv
    from cellseg.visualize import overlay, save_png

    want = _plain_mode(tmp_path, umask)
    lab = np.zeros((20, 30), np.int32)
    lab[2:8, 3:9] = 1
    lab[10:15, 12:20] = 2
    img = lab.astype(np.float32) + 1
    written = [
        write_labels(tmp_path / "a_labels.tif", lab),
        write_image(tmp_path / "img.tif", img, "YX"),
        write_csv(tmp_path / "a_objects.csv", object_table(lab, "YX", img, {1: 0.9, 2: 0.8})),
        save_png(tmp_path / "a_overlay.png", overlay(img, lab)),
        write_result(tmp_path, "01", 3, lab),
        atomic_write(tmp_path / "sub" / "x.txt", lambda tmp: tmp.write_text("x")),
    ]
    for p in written:
        assert _mode(p) == want, (p, oct(_mode(p)), oct(want))
    assert _hidden(tmp_path) == []


def test_model_file_and_blockwise_tiff_modes(tmp_path, umask, tiny_model_path):
    from cellseg.blockwise import segment_blockwise
    from cellseg.models import load_model
    from cellseg.segmenter import Segmenter

    want = _plain_mode(tmp_path, umask)
    model = load_model(tiny_model_path)
    assert _mode(model.save(tmp_path / "m.pt")) == want
    img = np.zeros((64, 64), np.float32)
    img[10:20, 10:20] = 1
    out, _ = segment_blockwise(Segmenter(model), img, tmp_path / "big_labels.tif", block=64, margin=16)
    assert _mode(out) == want
    assert _hidden(tmp_path) == []


def test_atomic_write_failure_names_the_target_and_leaves_nothing(tmp_path):
    (tmp_path / "keep.txt").write_text("old")

    def full(tmp):
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as e:
        atomic_write(tmp_path / "keep.txt", full)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "keep.txt")
    assert (tmp_path / "keep.txt").read_text() == "old"

    def denied(tmp):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))

    with pytest.raises(PermissionError) as e:
        atomic_write(tmp_path / "new.txt", denied)
    assert e.value.filename == str(tmp_path / "new.txt")
    with pytest.raises(ValueError, match="not an OSError"):
        atomic_write(tmp_path / "new.txt", lambda tmp: (_ for _ in ()).throw(ValueError("not an OSError")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    # below a regular file: the target is named
    with pytest.raises(OSError) as e:
        atomic_write(tmp_path / "keep.txt" / "x.txt", lambda tmp: tmp.write_text("x"))
    assert e.value.filename == str(tmp_path / "keep.txt" / "x.txt")


def test_check_output_dir(tmp_path, monkeypatch):
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_dir(f)
    with pytest.raises(OutputError, match=f"{f} is a file"):
        check_output_dir(f / "sub" / "deeper")
    # a folder that cannot be written (as root, permission bits do not stop us: a read-only
    # file system is simulated)
    real_open = os.open

    def read_only(path, flags, *a, **k):
        if str(path).startswith(str(tmp_path / "ro")) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **k)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(OutputError, match=r"cannot write to the output folder .*ro: Read-only file system"):
        check_output_dir(tmp_path / "ro")


def _killed_writer_leaves(folder, name="a_overlay.png"):
    """Run atomic_write in a child process and SIGKILL it mid-write: its temporary file stays."""
    import signal
    import subprocess
    import sys
    import time

    code = ("import sys, time; from pathlib import Path; from cellseg._files import atomic_write; "
            "atomic_write(Path(sys.argv[1]), lambda tmp: (print('writing', flush=True), time.sleep(60)))")
    child = subprocess.Popen([sys.executable, "-c", code, str(folder / name)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    time.sleep(0.05)
    left = [p for p in folder.iterdir() if p.name.startswith(f".{name}.")]
    assert len(left) == 1 and f"-{child.pid}-" in left[0].name
    return left[0]


def test_stale_temporaries_of_killed_writers_are_removed_others_kept(tmp_path):
    # issue 14, item 14: SIGKILL leaves a hidden temporary file that a complete rerun never removed
    import time

    from cellseg._files import _HOST, remove_stale_temporaries

    stale = _killed_writer_leaves(tmp_path)
    live = tmp_path / f".b_labels.tif.{_HOST}-{os.getpid()}-0123abcd.part.tif"  # a writer that runs
    other = tmp_path / ".c_labels.tif.abcdef-1-0123abcd.part.tif"  # another machine, written just now
    old_other = tmp_path / ".d_labels.tif.abcdef-1-0123abcd.part.tif"  # another machine, two days ago
    old_legacy = tmp_path / ".e_objects.csv.0123456789ab.part.csv"  # an earlier version, two hours ago
    new_legacy = tmp_path / ".f_overlay.png.k2j_x9q1.tmp.png"  # an earlier version, just now
    keep = [live, other, new_legacy, tmp_path / ".hidden_notes", tmp_path / "g_labels.tif"]
    for p in keep + [old_other, old_legacy]:
        p.write_bytes(b"x")
    for p, age in ((old_other, 2 * 86400), (old_legacy, 7200)):
        t = time.time() - age
        os.utime(p, (t, t))
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale, old_other, old_legacy])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)
    assert remove_stale_temporaries(tmp_path / "missing") == []
