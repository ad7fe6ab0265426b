"""Training on CUDA: the same numbers as on the CPU within tolerance, CUDA
graphs the same as eager steps, bf16 autocast close to float32, checkpoints
written on the GPU loaded on the CPU. Skipped where CUDA is absent (CI);
``scripts/gpu-check.sh`` runs them on a GPU machine."""
import numpy as np
import pytest
import torch

from fiftyone_ncl.core.data import PairData
from fiftyone_ncl.core.losses import infonce
from fiftyone_ncl.core.metrics import detection_metrics
from fiftyone_ncl.core.nets import build_dual_encoder
from fiftyone_ncl.core.registry import build_method, load_method
from fiftyone_ncl.core.training import TrainConfig, device_epoch_batches, make_generator, seeded
from fiftyone_ncl.datasets.synthetic import make_synthetic

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.usefixtures("one_torch_thread"),
]

SMALL = dict(embed_dim=16, hidden_dim=64, batch_size=64, seed=0)
METHODS = {
    "cosine": dict(train_heads=True, epochs=3),
    "crcl": dict(stages=(2, 2), warmup_epochs=1),
    "disncl": dict(epochs=4, warmup_epochs=1, mi_diagnostics=False, mi_steps=10, club_steps=2),
}


@pytest.fixture(autouse=True)
def full_precision_matmuls():
    """float32 products in float32 (no TF32) for the CPU comparisons."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.fixture(scope="module")
def noisy():
    """600 images x 2 captions (same-image masks in play), 40 % permuted."""
    return make_synthetic(n_images=300, captions_per_image=2, image_dim=24, text_dim=20, map_hidden=32,
                          noise_rate=0.4, seed=1)


def _fit(name, data, **extra):
    opts = dict(SMALL, **METHODS[name])
    opts.update(extra)
    method = build_method(name, **opts).fit(data, progress=False)
    return method, method.score(data, progress=False)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def test_device_batches_and_scc_update_on_cuda():
    from fiftyone_ncl.core.methods.crcl import scc_update, scc_update_torch

    cpu = device_epoch_batches(1000, 64, make_generator(3), torch.device("cpu"))
    gpu = device_epoch_batches(1000, 64, make_generator(3), torch.device("cuda"))
    assert all(b.is_cuda for b in gpu)
    assert [b.tolist() for b in cpu] == [b.cpu().tolist() for b in gpu]
    rng = np.random.default_rng(0)
    y, p = rng.random(4096).astype(np.float32), rng.random(4096).astype(np.float32)
    y[:3], p[:3] = [0.0, 0.125, 0.1], [0.5, 0.0, 0.1]
    for frozen, raw in ((False, False), (True, True)):
        ref = scc_update(y, p, 0.8, 0.1, frozen=frozen, store_raw=raw)
        got = scc_update_torch(torch.from_numpy(y).cuda(), torch.from_numpy(p).cuda(), 0.8, 0.1, frozen, raw)
        for r, g in zip(ref, got):
            np.testing.assert_array_equal(g.cpu().numpy(), r)  # bit for bit: no fused multiply-add


def test_infonce_step_matches_cpu():
    """One forward/backward of the heads on the same batch: loss and
    gradients agree with the CPU's to float32 rounding."""
    rng = np.random.default_rng(0)
    data = PairData(rng.normal(size=(256, 32)).astype(np.float32), rng.normal(size=(256, 24)).astype(np.float32),
                    rng.integers(0, 200, size=256))
    cfg = TrainConfig(embed_dim=16, hidden_dim=64)
    with seeded(0):
        model = build_dual_encoder(cfg, data)
    results = []
    for device in ("cpu", "cuda"):
        m = build_dual_encoder(cfg, data)
        m.load_state_dict(model.state_dict())
        m.to(device)
        idx = torch.arange(128, device=device)
        rows = torch.as_tensor(data.image_index, device=device)[idx]
        v = m.encode_image(torch.as_tensor(data.images, device=device)[rows])
        t = m.encode_text(torch.as_tensor(data.texts, device=device)[idx])
        loss = infonce(v, t, 0.05, positives=rows[:, None] == rows[None, :])
        loss.backward()
        results.append((loss.item(), {k: p.grad.detach().cpu().numpy() for k, p in m.named_parameters()}))
    (l_cpu, g_cpu), (l_gpu, g_gpu) = results
    assert l_gpu == pytest.approx(l_cpu, rel=1e-5)
    for k in g_cpu:
        assert _rel(g_gpu[k], g_cpu[k]) < 1e-4, k


@pytest.mark.parametrize("name", sorted(METHODS))
def test_fit_on_cuda_matches_cpu(name, noisy):
    """Whole fits in float32 (same seed, same batches): the GPU's embeddings
    and detection agree with the CPU's (rounding grows over the steps, so
    the tolerance is loose; a wrong batch order or a missed update is far
    outside it)."""
    data, truth = noisy
    _, cpu = _fit(name, data, device="cpu")
    _, gpu = _fit(name, data, device="cuda", amp=False)
    if name == "cosine":  # no thresholds or top-k choices to amplify rounding
        assert _rel(gpu.image_embeddings, cpu.image_embeddings) < 0.05
    a_cpu = detection_metrics(truth.noisy, cpu.confidence)["auroc"]
    a_gpu = detection_metrics(truth.noisy, gpu.confidence)["auroc"]
    assert abs(a_gpu - a_cpu) < 0.02, (a_cpu, a_gpu)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_cuda_graphs_match_eager_steps(name, noisy):
    """A captured step replays the very kernels of the eager step: the fits
    agree to rounding, and the history says the graphs ran."""
    data, _ = noisy
    m_graph, graph = _fit(name, data, device="cuda", amp=False, cuda_graphs=True)
    m_eager, eager = _fit(name, data, device="cuda", amp=False, cuda_graphs=False)
    stats = [h["cuda_graphs"] for h in m_graph.history if "cuda_graphs" in h]
    assert stats and stats[-1]["failure"] is None and stats[-1]["replays"] > 0, stats
    tol = 1e-2 if name == "disncl" else 1e-3  # DisNCL's top-k neighbours can flip on a rounding difference
    assert _rel(graph.image_embeddings, eager.image_embeddings) < tol
    np.testing.assert_allclose(graph.confidence, eager.confidence, atol=10 * tol)
    if name == "crcl":
        assert np.abs(m_graph.labels - m_eager.labels).mean() < 1e-3


@pytest.mark.parametrize("name", sorted(METHODS))
def test_amp_on_and_off(name, noisy):
    """bf16 autocast trains to the same detection as float32 (and stays finite)."""
    data, truth = noisy
    _, fp32 = _fit(name, data, device="cuda", amp=False)
    _, bf16 = _fit(name, data, device="cuda", amp=True)
    assert np.all(np.isfinite(bf16.confidence)) and np.all(np.isfinite(bf16.image_embeddings))
    a32 = detection_metrics(truth.noisy, fp32.confidence)["auroc"]
    a16 = detection_metrics(truth.noisy, bf16.confidence)["auroc"]
    assert abs(a16 - a32) < 0.03, (a32, a16)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_checkpoint_saved_on_gpu_loads_on_cpu(name, noisy, tmp_path):
    data, _ = noisy
    method, gpu = _fit(name, data, device="cuda", amp=False)
    path = method.save(tmp_path / ("%s.safetensors" % name))
    loaded = load_method(path, device="cpu")
    cpu = loaded.score(data, progress=False)
    assert _rel(cpu.image_embeddings, gpu.image_embeddings) < 1e-4
    np.testing.assert_allclose(cpu.confidence, gpu.confidence, atol=1e-3)
    if name == "crcl":
        np.testing.assert_array_equal(cpu.label, gpu.label)


def test_reference_scores_on_cuda_match_numpy():
    from fiftyone_ncl.core.reference import reference_scores

    rng = np.random.default_rng(0)
    img = rng.normal(size=(400, 16)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt = rng.normal(size=(700, 16)).astype(np.float32)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    owner = rng.integers(0, 400, size=700)
    p_np, l_np = reference_scores(img, txt, owner, 0.05, n_negatives=63)
    p_cu, l_cu = reference_scores(img, txt, owner, 0.05, n_negatives=63, device="cuda")
    np.testing.assert_allclose(p_cu, p_np, atol=1e-5)
    np.testing.assert_allclose(l_cu, l_np, rtol=1e-4, atol=1e-4)


def test_cnn_towers_with_graphs():
    """Pixels on the GPU through the CNN tower (BatchNorm running stats
    updated inside the graph)."""
    rng = np.random.default_rng(0)
    data = PairData(images=rng.integers(0, 255, size=(200, 1, 8, 8), dtype=np.uint8),
                    texts=rng.normal(size=(200, 6)).astype(np.float32), image_index=np.arange(200))
    for name in ("cosine", "crcl"):
        m, s = _fit(name, data, device="cuda", amp=True, cuda_graphs=True)
        assert np.all(np.isfinite(s.confidence))
        stats = [h["cuda_graphs"] for h in m.history if "cuda_graphs" in h]
        assert stats and stats[-1]["failure"] is None, stats
