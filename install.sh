#!/usr/bin/env bash
# Install cellseg into ./.venv on a fresh Debian machine (no GPU needed).
#   bash install.sh            core + napari + dask + test tools + peers (stardist, cellpose)
#   CELLSEG_NO_APT=1 bash install.sh   skip the apt step (no root / not Debian)
# Versions are locked by constraints.txt (torch is pinned to the 2.13.0 CPU wheel:
# an unpinned torch pulls a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${CELLSEG_NO_APT:-}" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # Xvfb for the napari tests, Qt's xcb libraries and Mesa GL for the viewer.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-upgrade \
    xvfb xauth \
    libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-randr0 libxcb-render-util0 \
    libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libxkbcommon-x11-0 \
    libegl1 libgl1 libglx-mesa0 libgl1-mesa-dri libdbus-1-3 libfontconfig1 fonts-dejavu-core \
    >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/pip --disable-pip-version-check -q"
$PIP install -c constraints.txt -e ".[dev,bench]" 2>&1 | sed "/is ignored: it is neither a file nor a directory/d"
# cellpose (a benchmark peer only) without its torchvision dependency; see benchmarks/_peers.py
$PIP install -c constraints.txt --no-deps "cellpose==4.2.1.1" 2>&1 | sed "/is ignored: it is neither a file nor a directory/d"
# bioimageio.core (runs 'bioimageio test' on exported packages) without its pin of bioimageio.spec
# 0.5.12, which fails with the locked pydantic; it runs with the spec 0.5.14 of the dev extra
$PIP install -c constraints.txt --no-deps "bioimageio.core==0.11.0" 2>&1 | sed "/is ignored: it is neither a file nor a directory/d"
.venv/bin/python -c "import cellseg, torch, numba, napari; print('cellseg', cellseg.__version__, 'installed; torch', torch.__version__)"
