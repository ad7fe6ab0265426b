"""How long a run's write, its undo and a repair take at scale.

``python -m fiftyone_ncl.bench.rollback --samples 200000 1000000``

For each size: a dataset of that many samples with 16-d image and caption
vectors (inserted directly, in minutes rather than hours), a ``cosine`` run
under ``ncl``, then a ``gmm`` run replacing it that is stopped (as Ctrl-C
would) in the last chunk of its field write; the undo puts the cosine values
back. Then the same write is stopped the hard way (the undo itself fails, as
after SIGKILL) and :func:`fiftyone_ncl.repair_run` restores it. Prints the
seconds of each step next to a plain FiftyOne ``set_values`` of the same
fields, for scale. The dataset is deleted at the end.
"""
import argparse
import json
import sys
import time

import numpy as np


def _make_dataset(n, dim=16, seed=0):
    import fiftyone as fo
    import fiftyone.core.fields as fof
    from bson import ObjectId

    ds = fo.Dataset()
    ds.add_sample_field("caption", fof.StringField)
    ds.add_sample_field("img", fof.VectorField)
    ds.add_sample_field("txt", fof.VectorField)
    rng = np.random.default_rng(seed)
    coll = ds._sample_collection
    now = __import__("datetime").datetime.utcnow()
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        z = rng.normal(size=(m, dim)).astype(np.float32)
        img = z + 0.3 * rng.normal(size=z.shape).astype(np.float32)
        txt = z + 0.3 * rng.normal(size=z.shape).astype(np.float32)
        swap = rng.random(m) < 0.2
        txt[swap] = txt[swap][::-1]
        coll.insert_many([
            {"_id": ObjectId(), "filepath": "/nonexistent/%08d.jpg" % (start + i), "tags": [], "metadata": None,
             "created_at": now, "last_modified_at": now, "_media_type": "image", "_rand": float(rng.random()),
             "_dataset_id": ds._doc.id, "caption": "caption %d" % (start + i),
             "img": fof.VectorField().to_mongo(img[i]), "txt": fof.VectorField().to_mongo(txt[i])}
            for i in range(m)
        ], ordered=False)
    ds.reload()
    return ds


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run(n):
    import fiftyone_ncl as ncl
    from fiftyone_ncl.fo import journal, writer

    out = {"samples": n}
    out["make_dataset_s"], ds = _timed(lambda: _make_dataset(n))
    kw = dict(image_embeddings="img", text_embeddings="txt", progress=False, suggest=False)
    try:
        out["first_run_s"], _ = _timed(lambda: ncl.compute_correspondence(ds, "caption", method="cosine", **kw))
        conf_before = ds.values("ncl_confidence")
        n_chunks = -(-n // writer._CHUNK)
        original = writer.FieldWriter._write_chunk

        def stop_in_last_chunk(self, ops, ids):
            stop_in_last_chunk.calls += 1
            if stop_in_last_chunk.calls == n_chunks:
                stop_in_last_chunk.t = time.perf_counter()
                raise KeyboardInterrupt
            return original(self, ops, ids)

        writer.FieldWriter._write_chunk = stop_in_last_chunk
        stop_in_last_chunk.calls = 0
        t0 = time.perf_counter()
        try:
            ncl.compute_correspondence(ds, "caption", method="gmm", overwrite=True, **kw)
        except KeyboardInterrupt:
            pass
        t1 = time.perf_counter()
        out["interrupted_write_s"] = round(stop_in_last_chunk.t - t0, 2)
        out["rollback_s"] = round(t1 - stop_in_last_chunk.t, 2)
        assert ds.values("ncl_confidence") == conf_before

        # the undo fails as after SIGKILL: the key stays marked; repair restores
        real_restore = journal._restore_backups
        journal._restore_backups = lambda dataset, doc: (_ for _ in ()).throw(SystemExit("killed"))
        stop_in_last_chunk.calls = 0
        try:
            ncl.compute_correspondence(ds, "caption", method="gmm", overwrite=True, **kw)
        except KeyboardInterrupt:
            pass
        journal._restore_backups = real_restore
        writer.FieldWriter._write_chunk = original
        assert ncl.get_run_info(ds)["state"] == "incomplete"
        out["repair_s"], _ = _timed(lambda: ncl.repair_run(ds, "ncl"))
        assert ds.values("ncl_confidence") == conf_before

        out["full_write_s"], _ = _timed(lambda: ncl.compute_correspondence(ds, "caption", method="gmm",
                                                                           overwrite=True, **kw))
        ids = ds.values("id")
        vals = ds.values("ncl_confidence")
        out["set_values_one_field_s"], _ = _timed(
            lambda: ds.set_values("ncl_confidence", dict(zip(ids, vals)), key_field="id", validate=False))
    finally:
        ds.delete()
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[200_000, 1_000_000])
    args = parser.parse_args(argv)
    for n in args.samples:
        print(json.dumps(run(n)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
