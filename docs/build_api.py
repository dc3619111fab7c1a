"""Build the API reference (HTML, from the docstrings) with pdoc.

    python docs/build_api.py [-o docs/_build/api]

Every public module of ``cellseg`` (names without a leading underscore, found by walking the
package) gets a page; a docstring warning from pdoc fails the build (exit status 1).
"""
from __future__ import annotations

import argparse
import pkgutil
import sys
import warnings
from pathlib import Path


def public_modules() -> list[str]:
    import cellseg

    names = ["cellseg"]
    for info in pkgutil.walk_packages(cellseg.__path__, prefix="cellseg."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return sorted(names)


def build(out: Path) -> list[str]:
    """Write the pages into ``out``; return pdoc's warnings (empty when the docstrings are clean)."""
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="numpy", search=True, show_source=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*public_modules(), output_directory=out)
    # a package's spec already adds the submodules it names; listing them again is harmless
    return [f"{w.category.__name__}: {w.message}" for w in caught
            if "a module with this name has already been added" not in str(w.message)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", default=str(Path(__file__).resolve().parent / "_build" / "api"))
    args = p.parse_args(argv)
    problems = build(Path(args.out))
    for w in problems:
        print(w, file=sys.stderr)
    print(f"API reference in {args.out} ({len(public_modules())} modules, {len(problems)} warnings)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
