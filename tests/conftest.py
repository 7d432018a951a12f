"""Shared fixtures: the offline tiny Qwen2.5-VL, built once per test session."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    from mmrl.models.tiny import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("models") / "tiny", preset="default", seed=0)


@pytest.fixture(scope="session")
def tiny_policy(tiny_model_path):
    from mmrl.models import load_policy

    return load_policy(tiny_model_path, device="cpu")


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny models on a busy 2-core machine: more threads only contend)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _quiet_and_seeded():
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    np.random.seed(0)
    yield
