"""Plain contrastive alignment: the space the baselines score in when the
given embeddings are not already a shared one, and the oracle of the
benchmarks (the same training on clean pairs only)."""
import numpy as np
import torch

from fiftyone_ncl.core.losses import infonce
from fiftyone_ncl.core.training import (
    Progress,
    Stepper,
    amp_dtype,
    autocast,
    batch_inputs,
    embed_rows,
    epoch_batches,
    make_optimizer,
    resolve_device,
    same_image_mask,
    to_device_inputs,
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

    def batch(self, pair_idx):
        """Image inputs, caption inputs and image rows of the given pairs."""
        idx = torch.as_tensor(pair_idx, device=self.device)
        img_rows = self.image_index[idx]
        return batch_inputs(self.images, img_rows, self.device), batch_inputs(self.texts, idx, self.device), img_rows


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
    was_training = model.training
    model.eval()
    dtype = amp_dtype(inputs.device, config.amp)
    bs = config.eval_batch_size
    img = embed_rows(model.encode_image, inputs.images, bs, inputs.device, dtype)
    txt = embed_rows(model.encode_text, inputs.texts, bs, inputs.device, dtype)
    model.train(was_training)
    return img, txt


def train_infonce(model, data, config, generator, progress=True, desc="infonce", weights=None):
    """Trains ``model`` with symmetric InfoNCE; captions of the same image in
    a batch count as positives.

    Args:
        model: a :class:`~fiftyone_ncl.core.nets.DualEncoder`
        data: a :class:`~fiftyone_ncl.core.data.PairData`
        config: a :class:`~fiftyone_ncl.core.training.TrainConfig`
        generator: torch generator for the batch order
        progress (True): see :class:`~fiftyone_ncl.core.training.Progress`
        desc ("infonce"): progress label
        weights (None): optional (P,) per-pair weights

    Returns:
        ``(inputs, history)``: the :class:`DeviceInputs` and one dict per epoch
    """
    device = resolve_device(config.device)
    dtype = amp_dtype(device, config.amp)
    model.to(device).train()
    inputs = DeviceInputs(data, device)
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device)
    stepper = Stepper(make_optimizer(model.parameters(), config), model.parameters(), config.grad_clip, dtype)
    n_batches = int(np.ceil(data.n_pairs / config.batch_size))
    history = []
    with Progress(config.epochs * n_batches, desc, progress) as bar:
        for epoch in range(config.epochs):
            losses = []
            for batch in epoch_batches(data.n_pairs, config.batch_size, generator):
                x_img, x_txt, rows = inputs.batch(batch)
                with autocast(device, dtype):
                    v = model.encode_image(x_img)
                    t = model.encode_text(x_txt)
                bw = None if w is None else w[torch.as_tensor(batch, device=device)]
                loss = infonce(v, t, config.tau, positives=same_image_mask(rows), weights=bw)
                stepper.step(loss)
                losses.append(loss.item())
                bar.update(epoch=epoch, loss=losses[-1])
            history.append({"epoch": epoch, "loss": float(np.mean(losses))})
    return inputs, history
