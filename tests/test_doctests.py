"""The examples in the docstrings of the public functions run and print what they show."""
import doctest
import importlib

import pytest

MODULES = ["cellseg.metrics.matching", "cellseg.metrics.errors", "cellseg.scale", "cellseg.labels",
           "cellseg.preprocess"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False)
    assert res.attempted > 0, f"{name} has no docstring examples"
    assert res.failed == 0, f"{res.failed} of {res.attempted} docstring examples of {name} failed (see output)"
