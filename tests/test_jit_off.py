"""The kernels' twin tests with numba's JIT off (``NUMBA_DISABLE_JIT=1``): the kernels then run as
plain Python, so what the tests check is the kernels' logic, not what the compiler made of it, and
Python-level errors inside a kernel (an index past the end, a wrong type) raise instead of being
compiled away. A fast subset: the label utilities and the distance, offsets and StarDist kernels."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FILES = ["tests/test_labels.py", "tests/test_rep_distance.py", "tests/test_rep_offsets.py",
         "tests/test_rep_stardist.py"]


@pytest.mark.slow
def test_kernel_twins_pass_with_the_jit_off():
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
                          "not slow and not peer and not data", *FILES], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout.splitlines()[-1], out.stdout[-500:]
