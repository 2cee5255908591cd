"""Fixtures shared by test modules."""

from __future__ import annotations

import pytest
import torch.distributed as dist


@pytest.fixture
def process_group(tmp_path):
    """A one-rank gloo process group (what `fully_shard` and DDP need), torn down after."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()
