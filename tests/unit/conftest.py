import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Keeps torch to one thread for the test: the machine is shared, and one
    thread keeps CPU results bit-for-bit reproducible between two fits."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
