"""The runnable examples in the algos docstrings stay correct."""

from __future__ import annotations

import doctest

import pytest

from mmrl.algos import advantages, estimate, filters, kl, losses


@pytest.mark.parametrize("module", [advantages, estimate, losses, kl, filters], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
