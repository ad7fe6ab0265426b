"""Training helpers: batches, progress, seeding."""
import numpy as np
import torch

from fiftyone_ncl.core.losses import infonce
from fiftyone_ncl.core.training import (
    DeviceSums,
    Progress,
    StepGraphs,
    device_epoch_batches,
    epoch_batches,
    make_generator,
    seeded,
)


def test_epoch_batches_visit_every_pair_once():
    gen = make_generator(0)
    batches = epoch_batches(1000, 128, gen)
    flat = np.concatenate(batches)
    assert sorted(flat) == list(range(1000))
    assert min(len(b) for b in batches) >= 120  # no ragged tiny batch
    assert len(epoch_batches(5, 128, gen)) == 1


def test_progress_callback_reports_fraction_and_label():
    seen = []
    with Progress(4, "train", lambda f, label: seen.append((f, label))) as bar:
        for _ in range(4):
            bar.update(loss=0.5)
    assert [round(f, 2) for f, _ in seen] == [0.25, 0.5, 0.75, 1.0]
    assert seen[-1][1].startswith("train") and "loss=0.5" in seen[-1][1]


def test_seeded_reproduces_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with seeded(7):
        a = torch.randn(3)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream is untouched
    with seeded(7):
        b = torch.randn(3)
    assert torch.equal(a, b)
    with seeded(8):
        assert not torch.equal(torch.randn(3), a)


def test_device_batches_are_the_host_batches():
    """The device-side batches are the same permutation split the same way
    as epoch_batches (so CPU results did not change and CUDA runs see the
    same batches)."""
    for n, bs in ((1000, 128), (5, 128), (1025, 64), (128, 128)):
        host = epoch_batches(n, bs, make_generator(3))
        dev = device_epoch_batches(n, bs, make_generator(3), torch.device("cpu"))
        assert [b.tolist() for b in host] == [d.tolist() for d in dev]
        assert all(d.dtype == torch.int64 for d in dev)


def test_progress_tick_reports_every_n_steps_and_flushes():
    seen = []
    calls = []
    with Progress(10, "train", lambda f, label: seen.append((f, label))) as bar:
        for i in range(10):
            bar.tick(lambda: calls.append(1) or {"loss": 0.25}, every=4)
        bar.flush(lambda: {"loss": 0.5})
    assert [round(f, 2) for f, _ in seen] == [0.4, 0.8, 1.0]
    assert len(calls) == 2  # the label is only computed when reporting
    assert "loss=0.5" in seen[-1][1]


def test_device_sums_mean_over_steps():
    sums = DeviceSums(["a", "b"], "cpu")
    for i in range(4):
        sums.add(torch.tensor(float(i)), torch.tensor(1.0, dtype=torch.float32))
    assert sums.read() == {"a": 1.5, "b": 1.0} and sums.steps() == 4
    assert sums.peek() == {"a": 1.5, "b": 1.0}
    sums.reset()
    assert sums.steps() == 0


def test_step_graphs_off_just_calls_the_step():
    ran = []
    runner = StepGraphs(lambda idx: ran.append(idx.tolist()), enabled=False)
    runner(torch.tensor([1, 2]))
    assert ran == [[1, 2]] and runner.stats()["cuda_graphs"] is False


def test_infonce_diagonal_fast_path_is_bit_for_bit_the_masked_one():
    """Without shared images the loss reads -log p_ii instead of multiplying
    by a one-hot target: the same numbers, forward and backward."""
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(64, 16, generator=g), dim=-1).requires_grad_()
    t = torch.nn.functional.normalize(torch.randn(64, 16, generator=g), dim=-1).requires_grad_()
    w = torch.rand(64, generator=g)
    eye = torch.eye(64, dtype=torch.bool)
    for weights in (None, w):
        a = infonce(v, t, 0.05, positives=None, weights=weights)
        ga = torch.autograd.grad(a, (v, t))
        b = infonce(v, t, 0.05, positives=eye, weights=weights)
        gb = torch.autograd.grad(b, (v, t))
        assert torch.equal(a, b)
        assert all(torch.equal(x, y) for x, y in zip(ga, gb))
