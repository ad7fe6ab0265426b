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
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``
        amp: mixed precision; None = on for CUDA, off on CPU
        seed: random seed; training on CPU is deterministic for a given seed
        eval_batch_size: pairs embedded at once when scoring
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.01
    grad_clip: float = 2.0
    embed_dim: int = 256
    hidden_dim: int = 1024
    tau: float = 0.05
    device: str = "auto"
    amp: bool = None
    seed: int = 0
    eval_batch_size: int = 4096


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


def autocast(device, dtype):
    """An autocast context for ``dtype`` on ``device`` (a no-op when None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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


def make_optimizer(params, config):
    """The encoders' AdamW under ``config.lr`` / ``config.weight_decay``."""
    return adam(params, config.lr, weight_decay=config.weight_decay)


def adam(params, lr, weight_decay=0.0):
    """AdamW (Adam when ``weight_decay`` is 0), with torch's fused kernel where
    this build has one for the parameters' device. The default per-tensor
    update launches a dozen elementwise ops per parameter tensor, which cost
    ~20 % of a training step of small heads on a CPU."""
    params = [p for p in params]
    cls = torch.optim.AdamW if weight_decay else torch.optim.Adam
    kwargs = {"lr": lr, "weight_decay": weight_decay} if weight_decay else {"lr": lr}
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
        self.done = 0
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

    def close(self):
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()


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
def embed_rows(fn, tensor, batch_size, device, dtype=None):
    """Applies ``fn`` to ``tensor`` in batches in eval mode; returns float32 numpy."""
    out = []
    for start in range(0, len(tensor), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(tensor)))
        with autocast(device, dtype):
            out.append(fn(batch_inputs(tensor, idx, device)).float().cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def same_image_mask(image_index_batch):
    """(B, B) bool tensor, True where two captions of a batch share an image."""
    return image_index_batch[:, None] == image_index_batch[None, :]
