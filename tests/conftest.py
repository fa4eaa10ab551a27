"""Fixtures shared by all tests."""

import random

import pytest
import torch


@pytest.fixture
def rng():
    return random.Random(1234)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
