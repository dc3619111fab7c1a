"""Download a public annotated dataset into cellseg's cache, in cellseg's layouts.

    python data/fetch.py list
    python data/fetch.py DIC-C2DH-HeLa            # -> ~/.cache/cellseg/datasets/DIC-C2DH-HeLa
    python data/fetch.py BBBC039 --cache /data/cellseg-cache
    python data/fetch.py DSB2018-stage1-train --force

A thin shell over cellseg.datasets.download (see data/README.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    from cellseg.datasets.download import REGISTRY, DownloadError, download, list_datasets

    ap = argparse.ArgumentParser(prog="fetch.py", description="Download a public annotated cell dataset.")
    ap.add_argument("name", help="dataset name, or 'list' to show them")
    ap.add_argument("--cache", help="cache folder (default: $CELLSEG_CACHE or ~/.cache/cellseg)")
    ap.add_argument("--force", action="store_true", help="download and unpack again even if cached")
    ap.add_argument("--quiet", action="store_true", help="no progress messages")
    args = ap.parse_args(argv)
    if args.name == "list":
        for n in list_datasets():
            e = REGISTRY[n]
            print(f"{n:28s} {e.layout:8s} {e.description}")
        return 0
    if args.name not in REGISTRY:
        print(f"fetch.py: unknown dataset {args.name!r}; run 'fetch.py list'", file=sys.stderr)
        return 2
    try:
        path = download(args.name, cache=args.cache, progress=not args.quiet, force=args.force)
    except (DownloadError, OSError, ValueError) as e:
        print(f"fetch.py: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
