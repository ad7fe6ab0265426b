"""Training machinery shared by every trained method.

Devices, seeding, mixed precision, batching, optimiser steps, progress and
eval-mode embedding. Each method writes its own epoch loop out of these pieces
(CRCL's stage restarts and DisNCL's per-epoch split differ too much for one
generic loop to stay readable).
"""
import contextlib
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from fiftyone_ncl.core import distributed

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Options every trained method shares.

    Attributes:
        epochs: epochs of training (per stage for staged methods)
        batch_size: pairs per batch
        lr: AdamW learning rate
        weight_decay: AdamW weight decay
        grad_clip: max global gradient L2 norm (None: no clipping)
        embed_dim: dimension of the joint space
        hidden_dim: hidden width of the projection heads
        tau: softmax temperature of the in-batch similarities
        head: ``"mlp"`` (a linear skip plus an MLP) or ``"linear"`` heads
        init: ``"random"`` or ``"cca"``: over frozen embeddings, heads start
            as the linear CCA solution of the pairs (see
            :func:`fiftyone_ncl.core.nets.initial_solution`)
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``
        amp: mixed precision; None = on for CUDA, off on CPU
        seed: random seed; training on CPU is deterministic for a given seed
        eval_batch_size: pairs embedded at once when scoring
        cuda_graphs: replay each training step as a captured CUDA graph
            (one launch instead of hundreds of small kernels); None = on for
            CUDA when the inputs sit on the GPU (embeddings, pixels) and no
            fp16 loss scaling is needed; ignored on CPU
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.01
    grad_clip: float = 2.0
    embed_dim: int = 256
    hidden_dim: int = 1024
    tau: float = 0.05
    head: str = "mlp"
    init: str = "random"
    device: str = "auto"
    amp: bool = None
    seed: int = 0
    eval_batch_size: int = 4096
    cuda_graphs: bool = None


def resolve_device(device="auto"):
    """Returns the torch device to train on: CUDA when present for ``"auto"``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=%r requested but CUDA is not available" % str(device))
    return device


def make_generator(seed):
    """A torch CPU generator seeded with ``seed`` (batch order)."""
    return torch.Generator().manual_seed(int(seed))


@contextlib.contextmanager
def seeded(seed):
    """Runs the block with torch's global generators (CPU and CUDA, which
    initialise networks and draw dropout / sampling noise) seeded with
    ``seed``, and restores the caller's generator states afterwards: a fit
    is reproducible without reseeding anything outside it."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def seed_everything(seed):
    """Deprecated: reseeded the global generators. Use :func:`seeded` and
    :func:`make_generator`."""
    warnings.warn(
        "seed_everything is deprecated: use fiftyone_ncl.core.training.seeded / make_generator",
        DeprecationWarning,
        stacklevel=2,
    )
    torch.manual_seed(seed)
    return make_generator(seed)


def amp_dtype(device, amp):
    """The autocast dtype to use, or None for full precision."""
    if device.type != "cuda" or amp is False:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device, dtype, cache=True):
    """An autocast context for ``dtype`` on ``device`` (a no-op when None).
    ``cache=False`` turns off autocast's cache of cast weights, which must be
    off inside a captured CUDA graph (and saves nothing when every weight is
    used once per step)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)


def epoch_batches(n, batch_size, generator):
    """Shuffled batches that visit every pair exactly once per epoch.

    The permutation is split into ``ceil(n / batch_size)`` nearly equal
    chunks instead of dropping a ragged last batch, so per-pair state that is
    updated once per visit (CRCL's labels) advances for every pair every
    epoch, and no batch is tiny (in-batch softmaxes need negatives).
    """
    perm = torch.randperm(n, generator=generator).numpy()
    n_batches = max(1, int(np.ceil(n / batch_size)))
    return [b for b in np.array_split(perm, n_batches) if len(b)]


def device_epoch_batches(n, batch_size, generator, device):
    """The batches of :func:`epoch_batches` (the same permutation from the
    same seeded CPU generator, split the same way) as index tensors on
    ``device``: the permutation crosses to the device once per epoch (an
    asynchronous copy from pinned memory on CUDA) and each batch is a view of
    it, so a step gathers its rows on the device with no host work. Drawing
    the order on the CPU keeps it identical on every device (CUDA and CPU
    runs see the same batches) and identical to earlier versions.
    """
    perm = torch.randperm(n, generator=generator)
    device = torch.device(device)
    if device.type == "cuda":
        perm = perm.pin_memory().to(device, non_blocking=True)
    elif device.type != "cpu":
        perm = perm.to(device)
    n_batches = max(1, int(np.ceil(n / batch_size)))
    return [b for b in torch.tensor_split(perm, n_batches) if len(b)]


def report_interval(total_steps, reports=200):
    """Steps between progress reports: about ``reports`` reports over a run
    (each one formats a label and may call back into an App), at least one
    per step for short runs."""
    return max(1, int(total_steps) // int(reports))


def make_optimizer(params, config, capturable=False):
    """The encoders' AdamW under ``config.lr`` / ``config.weight_decay``."""
    return adam(params, config.lr, weight_decay=config.weight_decay, capturable=capturable)


def adam(params, lr, weight_decay=0.0, capturable=False, eps=1e-8):
    """AdamW (Adam when ``weight_decay`` is 0), with torch's fused kernel where
    this build has one for the parameters' device. The default per-tensor
    update launches a dozen elementwise ops per parameter tensor, which cost
    ~20 % of a training step of small heads on a CPU. ``capturable``: safe to
    capture in a CUDA graph (its step counter lives on the GPU)."""
    params = [p for p in params]
    # under torchrun every rank starts from rank 0's weights (core.distributed)
    distributed.broadcast_parameters(params)
    cls = torch.optim.AdamW if weight_decay else torch.optim.Adam
    kwargs = {"lr": lr, "weight_decay": weight_decay} if weight_decay else {"lr": lr}
    kwargs["eps"] = eps
    if capturable:
        kwargs["capturable"] = True
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device / dtype / torch
        return cls(params, **kwargs)


class Stepper:
    """Backward + clip + optimiser step, with a grad scaler for fp16."""

    def __init__(self, optimizer, params, grad_clip, dtype):
        self.optimizer = optimizer
        self.params = [p for p in params if p.requires_grad]
        self.grad_clip = grad_clip
        self.scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    def step(self, loss):
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        # under torchrun: the ranks' gradients averaged before clipping, so
        # every rank clips and steps the one-process gradient
        distributed.sync_gradients(self.optimizer)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()


class Progress:
    """Progress over a known number of steps: a tqdm bar and/or a callback.

    Args:
        total: number of steps
        desc: label of the bar
        progress: True/False to show a tqdm bar, or a callable
            ``fn(fraction, label)`` (e.g. an operator's ``ctx.set_progress``)
            called after every step
    """

    def __init__(self, total, desc, progress=True):
        self.total = max(1, int(total))
        self.desc = desc
        if not distributed.is_main_process():
            progress = False  # one bar per distributed fit: rank 0's
        self.done = 0
        self._pending = 0
        self._callback = progress if callable(progress) else None
        self._bar = tqdm(total=total, desc=desc, leave=False) if progress is True else None

    def update(self, n=1, **postfix):
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(
                    {k: ("%.4g" % v if isinstance(v, float) else v) for k, v in postfix.items()},
                    refresh=False,
                )
        if self._callback is not None:
            label = self.desc
            if postfix:
                label += " " + " ".join(
                    "%s=%s" % (k, "%.4g" % v if isinstance(v, float) else v)
                    for k, v in postfix.items()
                )
            self._callback(min(1.0, self.done / self.total), label)

    def tick(self, postfix=None, every=1):
        """Counts one step and reports every ``every`` steps; ``postfix`` is
        a callable returning the label's values, called only when reporting
        (so a step that does not report reads nothing from the device)."""
        self._pending += 1
        if self._pending >= every:
            self.flush(postfix)

    def flush(self, postfix=None):
        """Reports the steps counted by :meth:`tick` since the last report."""
        if self._pending:
            pending, self._pending = self._pending, 0
            self.update(pending, **(postfix() if postfix is not None else {}))

    def close(self):
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()


class DeviceSums:
    """Running sums of per-step scalars (losses, label means) kept on the
    training device, with a step count: adding one step's values is two
    device-side ops with no host synchronisation (and can be captured in a
    CUDA graph); :meth:`read` copies the sums to the host (once per epoch),
    :meth:`peek` returns the latest means that have already reached the host
    without waiting for the device (for progress labels).

    Args:
        names: the sums' names
        device: the training device
        dtype (float64): accumulation dtype (float32 step values summed in
            float64, as ``np.mean`` of their ``.item()`` did)
    """

    def __init__(self, names, device, dtype=torch.float64):
        self.names = list(names)
        self.device = torch.device(device)
        dtype = dtype if self.device.type != "mps" else torch.float32  # no float64 on MPS
        self.values = torch.zeros(len(self.names) + 1, dtype=dtype, device=self.device)
        self._one = torch.ones((), dtype=torch.float32, device=self.device)
        self._host = None
        self._event = None
        self._snapshot = dict.fromkeys(self.names, float("nan"))

    def add(self, *values):
        """Adds one step's values (0-d tensors, in ``names`` order)."""
        values = [v.detach().reshape(()).float() for v in values] + [self._one]
        self.values.add_(torch.stack(values).to(self.values.dtype))

    def reset(self):
        self.values.zero_()
        self._event = None
        self._snapshot = dict.fromkeys(self.names, float("nan"))

    def _means(self, values):
        steps = max(1.0, values[-1])
        return {name: v / steps for name, v in zip(self.names, values[:-1])}

    def read(self):
        """``{name: mean over the steps added since reset}`` (synchronises
        with the device)."""
        return self._means(self.values.tolist())

    def steps(self):
        """Steps added since reset (synchronises)."""
        return int(self.values[-1].item())

    def peek(self):
        """The means as of the last :meth:`peek` whose copy has arrived (NaN
        before the first): never waits for the device on CUDA; on CPU the
        current means."""
        if self.device.type != "cuda":
            return self.read()
        if self._event is not None and self._event.query():
            self._snapshot = self._means(self._host.tolist())
            self._event = None
        if self._event is None:
            if self._host is None:
                self._host = torch.empty(self.values.shape, dtype=self.values.dtype, pin_memory=True)
            self._host.copy_(self.values, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        return dict(self._snapshot)


def use_cuda_graphs(config, device, dtype, inputs=None):
    """Whether to capture training steps as CUDA graphs (see
    ``TrainConfig.cuda_graphs``): CUDA only, not with fp16 loss scaling (its
    scale is read on the host), not with lazily loaded images (read from
    files each step)."""
    if device.type != "cuda" or config.cuda_graphs is False or dtype == torch.float16:
        return False
    if distributed.active() is not None:  # collectives inside a step: not captured
        return False
    if inputs is not None and (hasattr(inputs.images, "load") or hasattr(inputs.texts, "load")):
        return False
    return True


class StepGraphs:
    """Runs a training step eagerly, or as a captured CUDA graph replay.

    ``fn(idx)`` does one whole step (forward, backward, optimiser steps)
    for the batch of pair indices ``idx`` (a device tensor), reading only
    device-resident tensors and writing its results into tensors that outlive
    it (parameters, optimiser state, :class:`DeviceSums` values, label
    state): then a graph captured once replays it for every later batch with
    one launch. Graphs are keyed by the batch size and by ``key`` (whatever
    Python-side value the step bakes in: a phase, a learning rate); the first
    ``warmup`` steps, and the first step of every new key, run eagerly on a
    side stream (lazy initialisation: cuBLAS handles, optimiser state, the
    kernels of a new branch), as CUDA's capture rules ask. Optimisers must be
    built with ``capturable=True`` and gradients set to None before capture
    (``zero_grad``). A capture that fails turns graphs off for the rest of the
    fit (``failure`` says why) and the step runs eagerly.

    Args:
        fn: the step
        enabled: capture graphs (False: ``fn`` is just called)
        zero_grad: callable that sets every gradient the step writes to None
        warmup (3): eager steps before the first capture
    """

    def __init__(self, fn, enabled, zero_grad=None, warmup=3):
        self.fn = fn
        self.enabled = bool(enabled)
        self.zero_grad = zero_grad
        self.warmup = int(warmup)
        self.graphs = {}
        self.failure = None
        self.replays = 0
        self.captures = 0
        self._eager = 0
        self._seen = set()

    def __call__(self, idx, key=()):
        if not self.enabled:
            return self.fn(idx)
        k = (int(idx.shape[0]),) + tuple(key)
        entry = self.graphs.get(k)
        if entry is not None:
            graph, static = entry
            static.copy_(idx)
            graph.replay()
            self.replays += 1
            return None
        if self._eager < self.warmup or k not in self._seen:
            self._eager += 1
            self._seen.add(k)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.fn(idx)
            torch.cuda.current_stream().wait_stream(side)
            return None
        static = idx.clone()
        graph = torch.cuda.CUDAGraph()
        try:
            if self.zero_grad is not None:
                self.zero_grad()
            with torch.cuda.graph(graph):
                self.fn(static)
        except Exception as e:  # pragma: no cover - CUDA only
            self.enabled = False
            self.failure = "%s: %s" % (type(e).__name__, e)
            logger.warning("CUDA graph capture failed, training eagerly: %s", self.failure)
            if self.zero_grad is not None:
                self.zero_grad()
            torch.cuda.synchronize()
            return self.fn(idx)
        self.graphs[k] = (graph, static)
        self.captures += 1
        static.copy_(idx)
        graph.replay()
        self.replays += 1
        return None

    def stats(self):
        """What ran: ``{"cuda_graphs", "captures", "replays", "failure"}``."""
        return {"cuda_graphs": bool(self.enabled or self.captures), "captures": self.captures,
                "replays": self.replays, "failure": self.failure}


def to_device_inputs(array, device):
    """Moves a numpy input array to ``device`` once (float embeddings as
    float32, pixels kept as uint8 and converted per batch). Lazily loaded
    images (anything with a ``load`` method) stay where they are."""
    if hasattr(array, "load"):
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.dtype == torch.float64:
        tensor = tensor.float()
    return tensor.to(device)


def batch_inputs(tensor, idx, device=None):
    """Rows ``idx`` of an input tensor, pixels scaled to [0, 1] floats;
    lazily loaded images are read and moved to ``device``."""
    if hasattr(tensor, "load"):
        rows = idx.cpu().numpy() if torch.is_tensor(idx) else np.asarray(idx)
        return tensor.load(rows).to(device if device is not None else "cpu")
    if not torch.is_tensor(idx):
        idx = torch.as_tensor(idx, device=tensor.device)
    x = tensor.index_select(0, idx.to(tensor.device))
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    return x


@torch.no_grad()
def embed_rows(fn, tensor, batch_size, device, dtype=None, to_host=True):
    """Applies ``fn`` to ``tensor`` in batches in eval mode; returns float32
    numpy, or with ``to_host=False`` a float32 tensor on ``device`` (the
    batches stay there: no host round trip, no synchronisation per batch)."""
    ranks = distributed.active()
    if ranks is not None:
        # under torchrun each rank embeds its share of the rows; all of them gathered
        begin, end = ranks.bounds(len(tensor))
        if begin == end:  # fewer rows than ranks: an empty share of the right width
            local = _embed_range(fn, tensor, batch_size, device, dtype, 0, 1)[:0]
        else:
            local = _embed_range(fn, tensor, batch_size, device, dtype, begin, end)
        full = distributed.gather_rows(local, len(tensor))
        return full.cpu().numpy() if to_host else full
    out = _embed_range(fn, tensor, batch_size, device, dtype, 0, len(tensor), to_host)
    if not out:
        return np.zeros((0, 0), dtype=np.float32) if to_host else torch.zeros((0, 0), device=device)
    if not to_host:
        return torch.cat(out)
    if torch.device(device).type == "cuda":
        torch.cuda.current_stream(device).synchronize()  # the non-blocking copies above
    return torch.cat(out).numpy()


def _embed_range(fn, tensor, batch_size, device, dtype, begin, end, to_host=None):
    """``fn`` over rows ``begin:end`` in batches: a list of batch outputs
    (moved to the host without blocking when ``to_host``), or, with
    ``to_host=None``, their concatenation on ``device``."""
    out = []
    resident = not hasattr(tensor, "load")
    for start in range(begin, end, batch_size):
        stop = min(start + batch_size, end)
        idx = torch.arange(start, stop, device=tensor.device if resident else "cpu")
        with autocast(device, dtype):
            y = fn(batch_inputs(tensor, idx, device)).float()
        out.append(y if not to_host or y.device.type == "cpu" else y.to("cpu", non_blocking=True))
    if to_host is None:
        return torch.cat(out) if out else None
    return out


def same_image_mask(image_index_batch):
    """(B, B) bool tensor, True where two captions of a batch share an image."""
    return image_index_batch[:, None] == image_index_batch[None, :]
