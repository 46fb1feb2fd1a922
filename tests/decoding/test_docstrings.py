"""The worked examples in the decoding modules' docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

import decodebench.decoding as decoding
from decodebench.decoding import sampling
from decodebench.decoding.params import table
from decodebench.decoding.transforms import api, filters, llamacpp, penalties, smoothing

# the package exports the function `dry`, which shadows its module's attribute
MODULES = [filters, penalties, sampling, api, table, llamacpp, smoothing,
           importlib.import_module("decodebench.decoding.transforms.dry"),
           importlib.import_module("decodebench.decoding.engine.shared")]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    names = {name: getattr(decoding, name) for name in decoding.__all__}
    result = doctest.testmod(module, extraglobs={"torch": torch, **names}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
