"""``python -m cellseg ...``: the ``cellseg`` command."""
import sys

from .cli import main

sys.exit(main())
