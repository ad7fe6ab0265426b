"""Fixtures creating real FiftyOne datasets in the test database."""
import numpy as np
import pytest

import fiftyone as fo

pytestmark = pytest.mark.integration


def joint_embeddings(n, dim=16, n_swapped=0, seed=0, noise=0.3):
    """Image and caption embeddings in one space, the first ``n_swapped``
    captions rotated among themselves (so they no longer match)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, dim))
    img = z + noise * rng.normal(size=(n, dim))
    txt = z + noise * rng.normal(size=(n, dim))
    truth = np.zeros(n, bool)
    if n_swapped:
        txt[:n_swapped] = txt[np.roll(np.arange(n_swapped), 1)]
        truth[:n_swapped] = True
    return img.astype(np.float32), txt.astype(np.float32), truth


@pytest.fixture
def make_dataset():
    """Factory of small datasets with precomputed joint embeddings.

    ``make_dataset(n=100, n_swapped=20)`` returns a dataset whose samples have
    ``caption`` ("caption i", where a swapped sample carries its neighbour's
    text), ``img``/``txt`` vectors and a ``truth`` flag.
    """
    created = []

    def make(n=100, n_swapped=20, dim=16, seed=0, **fields):
        img, txt, truth = joint_embeddings(n, dim, n_swapped, seed)
        order = np.arange(n)
        order[:n_swapped] = np.roll(np.arange(n_swapped), 1)
        ds = fo.Dataset()
        ds.add_samples(
            [
                fo.Sample(
                    filepath="/nonexistent/ncl/%05d.jpg" % i,
                    caption="caption %d" % order[i],
                    img=img[i],
                    txt=txt[i],
                    truth=bool(truth[i]),
                    **{k: v[i] for k, v in fields.items()},
                )
                for i in range(n)
            ],
            progress=False,
        )
        created.append(ds)
        return ds

    yield make
    for ds in created:
        if fo.dataset_exists(ds.name):
            ds.delete()


@pytest.fixture
def photo_dataset(skimage_photos):
    """12 real photos with the captions we wrote for them."""
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=p, caption=c) for p, c in skimage_photos], progress=False)
    yield ds
    if fo.dataset_exists(ds.name):
        ds.delete()


def snapshot(dataset):
    """Schema, values and runs of a dataset, to check nothing changed."""
    dataset.reload()
    schema = {k: type(v).__name__ for k, v in dataset.get_field_schema().items()}
    fields = [k for k in schema if k not in ("metadata", "last_modified_at")]
    values = {}
    for f in fields:
        vals = dataset.values(f)
        # arrays by bytes, so NaN entries compare equal to themselves
        values[f] = [(v.dtype.str, v.shape, v.tobytes()) if isinstance(v, np.ndarray) else v for v in vals]
    return {
        "schema": schema,
        "values": values,
        "runs": dataset.list_brain_runs(),
        "tags": dataset.count_sample_tags(),
        "views": dataset.list_saved_views(),
    }
