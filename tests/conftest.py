"""Suite-wide settings: matplotlib off-screen; each test module runs single-threaded
(inputs are small, so extra intra-op threads only add contention on shared machines)
and gets the global RNG state back as it found it; tests marked ``gpu`` are skipped
without CUDA."""

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True, scope="module")
def _one_thread_and_own_rng():
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.random.set_rng_state(rng)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
