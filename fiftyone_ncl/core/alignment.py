"""Plain contrastive alignment: the space the baselines score in when the
given embeddings are not already a shared one, and the oracle of the
benchmarks (the same training on clean pairs only)."""
import numpy as np
import torch

from fiftyone_ncl.core.distributed import split_forward, sync_buffers
from fiftyone_ncl.core.losses import infonce
from fiftyone_ncl.core.training import (
    DeviceSums,
    Progress,
    StepGraphs,
    Stepper,
    amp_dtype,
    autocast,
    batch_inputs,
    device_epoch_batches,
    embed_rows,
    make_optimizer,
    report_interval,
    resolve_device,
    same_image_mask,
    to_device_inputs,
    use_cuda_graphs,
)


class DeviceInputs:
    """``PairData`` inputs moved to a device once, with the batch gathers
    every trainer needs."""

    def __init__(self, data, device):
        self.device = device
        self.images = to_device_inputs(data.images, device)
        self.texts = to_device_inputs(data.texts, device)
        self.image_index = torch.as_tensor(data.image_index, device=device)
        self.n_pairs = data.n_pairs
        # whether a batch can hold two captions of one image: only then do
        # the losses need the (B, B) same-image mask
        self.shared_images = bool(len(np.unique(data.image_index)) < data.n_pairs)

    def batch(self, pair_idx):
        """Image inputs, caption inputs and image rows of the given pairs."""
        idx = torch.as_tensor(pair_idx, device=self.device)
        img_rows = self.image_index[idx]
        return batch_inputs(self.images, img_rows, self.device), batch_inputs(self.texts, idx, self.device), img_rows

    def same_image(self, img_rows):
        """The (B, B) same-image mask of a batch, or None when no two
        captions share an image (the losses then use the diagonal)."""
        return same_image_mask(img_rows) if self.shared_images else None


@torch.no_grad()
def encode_all(model, inputs, config):
    """Eval-mode embeddings of every image and caption.

    Args:
        model: a module with ``encode_image`` / ``encode_text``
        inputs: a :class:`DeviceInputs`
        config: a :class:`~fiftyone_ncl.core.training.TrainConfig`

    Returns:
        ``(image_embeddings (N, d), text_embeddings (P, d))`` float32 numpy
    """
    sync_buffers(model)  # under torchrun: the ranks' BatchNorm statistics averaged
    was_training = model.training
    model.eval()
    dtype = amp_dtype(inputs.device, config.amp)
    bs = config.eval_batch_size
    img = embed_rows(model.encode_image, inputs.images, bs, inputs.device, dtype)
    txt = embed_rows(model.encode_text, inputs.texts, bs, inputs.device, dtype)
    model.train(was_training)
    return img, txt


def train_infonce(model, data, config, generator, progress=True, desc="infonce", weights=None, on_epoch=None):
    """Trains ``model`` with symmetric InfoNCE; captions of the same image in
    a batch count as positives.

    The pairs stay on the training device and each step gathers its batch
    there; loss sums stay on the device too and are read once per epoch, so a
    step does no host synchronisation (on CUDA it is replayed as one captured
    graph, see ``TrainConfig.cuda_graphs``).

    Args:
        model: a :class:`~fiftyone_ncl.core.nets.DualEncoder`
        data: a :class:`~fiftyone_ncl.core.data.PairData`
        config: a :class:`~fiftyone_ncl.core.training.TrainConfig`
        generator: torch generator for the batch order
        progress (True): see :class:`~fiftyone_ncl.core.training.Progress`
        desc ("infonce"): progress label
        weights (None): optional (P,) per-pair weights
        on_epoch (None): ``fn(epoch, model)`` called after every epoch;
            training stops early when it returns True (model selection)

    Returns:
        ``(inputs, history)``: the :class:`DeviceInputs` and one dict per epoch
    """
    device = resolve_device(config.device)
    dtype = amp_dtype(device, config.amp)
    model.to(device).train()
    inputs = DeviceInputs(data, device)
    graphs = use_cuda_graphs(config, device, dtype, inputs)
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device)
    optimizer = make_optimizer(model.parameters(), config, capturable=graphs)
    stepper = Stepper(optimizer, model.parameters(), config.grad_clip, dtype)
    sums = DeviceSums(["loss"], device)

    def step(batch):
        x_img, x_txt, rows = inputs.batch(batch)
        with autocast(device, dtype, cache=not graphs):
            # under torchrun: this rank's slice, gathered into the whole batch
            v = split_forward(model.encode_image, x_img)
            t = split_forward(model.encode_text, x_txt)
        loss = infonce(v, t, config.tau, positives=inputs.same_image(rows), weights=None if w is None else w[batch])
        stepper.step(loss)
        sums.add(loss)

    runner = StepGraphs(step, graphs, zero_grad=lambda: optimizer.zero_grad(set_to_none=True))
    n_batches = int(np.ceil(data.n_pairs / config.batch_size))
    every = report_interval(config.epochs * n_batches)
    history = []
    with Progress(config.epochs * n_batches, desc, progress) as bar:
        for epoch in range(config.epochs):
            sums.reset()
            for batch in device_epoch_batches(data.n_pairs, config.batch_size, generator, device):
                runner(batch)
                bar.tick(lambda: {"epoch": epoch, "loss": sums.peek()["loss"]}, every)
            history.append({"epoch": epoch, "loss": sums.read()["loss"]})
            bar.flush(lambda: {"epoch": epoch, "loss": history[-1]["loss"]})
            if on_epoch is not None and on_epoch(epoch, model):
                break
    if runner.captures or runner.failure:
        history[-1]["cuda_graphs"] = runner.stats()
    sync_buffers(model)
    return inputs, history
