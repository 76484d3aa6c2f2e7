"""One thread per test process: these problems are tiny, and on a shared 2-core box OpenMP (t-SNE) and torch
intra-op threads oversubscribed by other processes run 10-20x slower than a single thread."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="package")
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(previous)
