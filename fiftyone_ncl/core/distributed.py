"""Data-parallel training over ``torch.distributed`` ranks (``torchrun``).

How the training stays one computation spread over ranks:

* every rank holds the same pairs and draws the same batch order (the
  same seeded generator), so all ranks agree on each *global* batch;
* inside a step, each rank encodes only its contiguous slice of the global
  batch (:func:`split_forward`); the slices' outputs are all-gathered with
  their gradients, so every rank computes the loss over the whole global
  batch: in-batch negatives span all ranks, as in one process;
* everything computed from the gathered batch is therefore identical on
  every rank without further messages: CRCL's per-pair labels, DisNCL's
  clean/noisy split, its teachers and critics, the calibration;
* the gather's backward sums each slice's gradient over the ranks, and every
  parameter's gradient is averaged over the ranks before each optimiser
  step (:func:`sync_gradients`, before clipping). Parameters used before the
  gather (the encoders) then get the sum of the ranks' shares, those used
  after it (DisNCL's decoders, critics, CLUB) the gradient every rank
  computed in full: the one-process gradient either way;
* parameters are broadcast from rank 0 when their optimiser is built
  (:func:`broadcast_parameters`), so every rank starts from the same weights
  and, updating them with the same averaged gradients, keeps them equal;
* eval-mode embedding of all rows is split across ranks and gathered
  (:func:`gather_rows`), so the per-epoch split and scoring see every pair;
* BatchNorm in the CNN tower (:class:`SyncedBatchNorm2d`) normalises each
  rank's slice with the statistics of the whole global batch (the ranks'
  per-channel sums all-reduced, with gradients), as one process would; any
  other BatchNorm (an open_clip ResNet) normalises with its slice's
  statistics, as DistributedDataParallel does without SyncBatchNorm, and its
  running statistics are averaged over the ranks (:func:`sync_buffers`)
  before eval-mode embedding and at the end of a fit.

Nothing here runs unless :func:`data_parallel` is active: a process outside
it (or a world of one) trains exactly as before. Scoring, the decision and
the writes happen on rank 0 after the fit, outside the context.
"""
import contextlib
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

_ACTIVE = None  # the Ranks of the data_parallel block now running, or None


class Ranks:
    """The process group a fit is spread over.

    Attributes:
        group: the ``torch.distributed`` group (None: the default group)
        world: number of ranks
        rank: this process's rank in it
    """

    def __init__(self, group=None):
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def bounds(self, n):
        """``(start, stop)`` of this rank's contiguous share of ``n`` rows
        (``np.array_split`` sizes: the first ``n % world`` ranks get one more)."""
        return shard_bounds(n, self.world, self.rank)


def shard_bounds(n, world, rank):
    """``(start, stop)`` of rank ``rank``'s share of ``n`` rows split into
    ``world`` contiguous nearly equal parts."""
    base, extra = divmod(int(n), int(world))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def active():
    """The :class:`Ranks` of the running :func:`data_parallel` block, or None."""
    return _ACTIVE


def is_main_process():
    """True outside distributed runs and on rank 0 of the default group."""
    if _ACTIVE is not None:
        return _ACTIVE.rank == 0
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@contextlib.contextmanager
def data_parallel(group=None):
    """Spreads the fits run in this block over the ranks of ``group`` (the
    default process group when None; a no-op when torch.distributed is not
    initialised or the world has one rank). Every rank must run the same
    fit with the same data and options."""
    global _ACTIVE
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) < 2:
        yield None
        return
    if _ACTIVE is not None:
        raise RuntimeError("data_parallel blocks do not nest")
    _ACTIVE = Ranks(group)
    try:
        yield _ACTIVE
    finally:
        _ACTIVE = None


class _GatherRows(torch.autograd.Function):
    """All-gathers each rank's rows (padded to one length) into the full
    batch; the backward sums the full batch's gradient over the ranks and
    returns this rank's rows of it."""

    @staticmethod
    def forward(ctx, local, sizes, rank, group):
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group
        longest = max(sizes)
        padded = local
        if local.shape[0] < longest:
            pad = local.new_zeros((longest - local.shape[0],) + tuple(local.shape[1:]))
            padded = torch.cat([local, pad])
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous(), group=group)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]], None, None, None


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; the backward sums the gradient over the ranks
    (each rank's loss is the same replicated loss, see the module notes)."""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


class SyncedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and checkpoints) whose
    training-mode statistics, inside :func:`data_parallel`, are those of the
    whole global batch: the ranks' per-channel sums and sums of squares are
    all-reduced (with gradients), so each rank's slice is normalised as one
    process normalises the batch, and the running statistics stay equal on
    every rank. Elsewhere it is ``nn.BatchNorm2d``. (torch's SyncBatchNorm
    needs CUDA; this one runs on gloo too.)"""

    def forward(self, x):
        ranks = _ACTIVE
        if ranks is None or not self.training or not self.track_running_stats:
            return super().forward(x)
        c = x.shape[1]
        dims = (0, 2, 3)
        local = torch.cat([x.sum(dim=dims), (x * x).sum(dim=dims), x.new_full((1,), x.numel() / c)])
        total = _AllReduceSum.apply(local.float(), ranks.group)
        count = total[-1]
        mean = total[:c] / count
        var = (total[c: 2 * c] / count - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
            unbiased = var.detach() * (count / (count - 1).clamp_min(1.0))
            self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        shape = (1, c, 1, 1)
        y = (x - mean.to(x.dtype).view(shape)) * torch.rsqrt(var + self.eps).to(x.dtype).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _gather(value, sizes, ranks):
    if torch.is_tensor(value):
        return _GatherRows.apply(value, sizes, ranks.rank, ranks.group)
    if isinstance(value, dict):
        return {k: _gather(v, sizes, ranks) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_gather(v, sizes, ranks) for v in value)
    if value is None:
        return None
    raise TypeError("cannot gather a %s across ranks" % type(value).__name__)


def split_forward(fn, *inputs):
    """``fn(*inputs)`` over the rows of a global batch: outside
    :func:`data_parallel`, just the call; inside it, this rank applies ``fn``
    to its contiguous slice of the rows and the outputs (tensors, or dicts /
    tuples of them, one row per input row) are all-gathered with gradients
    into the whole batch, in row order."""
    ranks = _ACTIVE
    if ranks is None:
        return fn(*inputs)
    n = int(inputs[0].shape[0])
    sizes = [b - a for a, b in (shard_bounds(n, ranks.world, r) for r in range(ranks.world))]
    start, stop = ranks.bounds(n)
    return _gather(fn(*[x[start:stop] for x in inputs]), sizes, ranks)


@torch.no_grad()
def gather_rows(local, n):
    """The full ``(n, ...)`` array from each rank's :func:`shard_bounds`
    share of it (numpy or tensor in, the same kind out; a tensor must sit
    where the backend communicates: CPU for gloo, CUDA for NCCL)."""
    ranks = _ACTIVE
    as_numpy = not torch.is_tensor(local)
    t = torch.from_numpy(np.ascontiguousarray(local)) if as_numpy else local
    sizes = [b - a for a, b in (shard_bounds(n, ranks.world, r) for r in range(ranks.world))]
    out = _GatherRows.apply(t, sizes, ranks.rank, ranks.group)
    return out.numpy() if as_numpy else out


def _grads(params):
    return [p.grad for p in params if p.grad is not None]


@torch.no_grad()
def sync_gradients(params):
    """Averages the gradients of ``params`` (tensors or an optimiser) over
    the ranks, in one flat message per dtype and device; a no-op outside
    :func:`data_parallel`."""
    ranks = _ACTIVE
    if ranks is None:
        return
    if isinstance(params, torch.optim.Optimizer):
        params = [p for g in params.param_groups for p in g["params"]]
    buckets = {}
    for g in _grads(params):
        buckets.setdefault((g.dtype, g.device), []).append(g)
    for grads in buckets.values():
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=ranks.group)
        flat.div_(ranks.world)
        for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)


@torch.no_grad()
def sync_buffers(module):
    """Averages a module's floating-point buffers (BatchNorm running
    statistics) over the ranks: each rank's BatchNorm normalises its own
    slice of a batch and tracks its own running statistics; averaged before
    eval-mode embedding and at the end of a fit, every rank (and rank 0's
    scoring) uses the same. A no-op outside :func:`data_parallel`."""
    ranks = _ACTIVE
    if ranks is None or module is None:
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=ranks.group)
            buf.div_(ranks.world)


@torch.no_grad()
def broadcast_parameters(params):
    """Copies rank 0's values of ``params`` to every rank (a no-op outside
    :func:`data_parallel`)."""
    ranks = _ACTIVE
    if ranks is None:
        return
    src = dist.get_global_rank(ranks.group, 0) if ranks.group is not None else 0
    for p in params:
        dist.broadcast(p.data, src=src, group=ranks.group)


def init_from_env(backend=None):
    """Joins the process group ``torchrun`` describes in the environment
    (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``...); returns
    ``(rank, world, device)`` with ``device`` the device this rank trains on
    (``cuda:LOCAL_RANK`` when CUDA is present, else ``"cpu"``). Backend: NCCL
    with CUDA, gloo otherwise. Outside torchrun (no ``WORLD_SIZE``): rank 0
    of a world of one, nothing initialised."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = "cuda:%d" % local_rank if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    if world < 2:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"))
    return dist.get_rank(), dist.get_world_size(), device
