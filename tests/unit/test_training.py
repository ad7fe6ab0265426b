"""Training helpers: batches, progress, seeding."""
import numpy as np
import torch

from fiftyone_ncl.core.training import Progress, epoch_batches, make_generator, seeded


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
