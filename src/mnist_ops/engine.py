"""The engine under `fit`: device and autocast, the one train step, evaluation, checkpoints.

Everything that trains calls `TrainStep` (fit, bench, the benchmarks, the tests; lr-find runs
torch-lr-finder's own loop on `build_model`'s model), so the recipe's loss, label smoothing, precision, memory format and model copies are
the same wherever a step is measured. A checkpoint is a plain dict of tensors and plain values,
read back with `torch.load(weights_only=True)`; `last.pt` also carries the optimizer, scheduler,
history and every random state, so `fit(resume=True)` continues a killed run exactly.
"""

from __future__ import annotations

import io
import math
import os
import random
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from mnist_ops.batches import normalize
from mnist_ops.config import FIELD_TYPES, Config, resolve
from mnist_ops.data import DATASET_TOML, dataset_info, stored_transposed
from mnist_ops.errors import UserError, show
from mnist_ops.fileio import atomic_write_bytes
from mnist_ops.models import (build_record, check_output, create_model, list_models, model_kwargs, rebuild_model,
                              trust, use_fast_dropout)
from mnist_ops.muon import GraftedMuon, muon_groups
from mnist_ops.replicas import ThreadReplicas

CHECKPOINT_MIN_EPOCH = 3  # the seed's rule: no checkpoint before epoch 3 (0-based)


def _is_number(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


CHECKPOINT_FIELDS = {  # what every reader uses, and the types fit writes
    "model_name": lambda value: isinstance(value, str),
    "model": lambda value: isinstance(value, dict) and all(
        isinstance(name, str) and isinstance(tensor, torch.Tensor) for name, tensor in value.items()),
    "config": lambda value: isinstance(value, dict),
    "epoch": lambda value: type(value) is int,
    "metrics": lambda value: isinstance(value, dict),
    "mean": _is_number,
    "std": lambda value: _is_number(value) and value > 0,
}
MODEL_SOURCE_KINDS = ("registered", "entry point", "file", "module")
MODEL_SOURCE_KWARGS = {  # the keyword arguments fit passes a model builder (models.MODEL_KEYS + num_classes)
    "dropout": lambda value: _is_number(value) and 0 <= value < 1,
    "num_classes": lambda value: type(value) is int and 1 <= value <= 100_000,
}


# ---------------------------------------------------------------------------- device, precision, model

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' requested but MPS is not available; use --device cpu or auto")
    return torch.device(name)


def autocast_context(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def memory_format(config: Config) -> torch.memory_format:
    return torch.channels_last if config.channels_last else torch.contiguous_format


def build_model(config: Config, num_classes: int = 10, image_size: tuple[int, int] = (28, 28),
                log: Callable[[str], None] | None = None) -> nn.Module:
    """The config's model (a registered name, an entry point, `file.py:Class` or `module:function`;
    see models.create_model), checked to return [N, num_classes], with FastDropout layers if
    `fast_dropout` is set. Config values that differ from the preset's must fit the model."""
    explicit, defaults = model_kwargs(config)
    model = create_model(config.model, defaults={**defaults, "num_classes": num_classes}, log=log, **explicit)
    check_output(model, config.model, num_classes, image_size)
    if config.train_crop:
        if config.train_crop >= min(image_size):
            raise UserError(f"train_crop = {config.train_crop} is not smaller than the images "
                            f"({image_size[0]} x {image_size[1]}); set it below {min(image_size)}, or 0 for whole images")
        def takes(size: int) -> bool:
            try:
                check_output(model, config.model, num_classes, (size, size))
            except UserError:
                return False
            return True

        if not takes(config.train_crop):
            smallest = next((size for size in range(config.train_crop + 1, min(image_size)) if takes(size)), None)
            if smallest is not None:
                raise UserError(f"train_crop = {config.train_crop} is too small for model {config.model}, which takes "
                                f"crops from {smallest} x {smallest}; raise it, or set 0 for whole images")
            raise UserError(f"model {config.model} takes no crop smaller than the images (a net for crops pools its "
                            "whole last map, as models.GlobalAvgPool does); set train_crop = 0"
                            + ("" if config.model == "fast-8k" else ", or train fast-8k"))
    trust(build_record(model))  # the user named this code: its checkpoints may rebuild it here
    if config.fast_dropout:
        use_fast_dropout(model)
    return model


def model_from_checkpoint(checkpoint: dict) -> nn.Module:
    """The checkpoint's model, rebuilt from where it came from (refusing a model file that moved or
    changed since), with the checkpoint's weights."""
    if "model_source" in checkpoint:
        model = rebuild_model(checkpoint["model_source"])
    else:  # written before checkpoints recorded their model's source
        model = create_model(checkpoint["model_name"], defaults={"dropout": checkpoint["config"].get("dropout", 0.0)})
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0].rstrip(":.")
        raise UserError(f"checkpoint weights do not fit model {checkpoint['model_name']} ({first}); it was written "
                        "by another version of the model or of mnist-ops (layer names changed): retrain it") from None
    return model


# ---------------------------------------------------------------------------- the train step

def make_optimizer(config: Config, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.momentum, 0.999),
                                weight_decay=config.weight_decay)
    sgd = dict(lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
               weight_decay=config.weight_decay)
    if config.optimizer == "muon":
        return GraftedMuon(muon_groups(model), **sgd)
    return torch.optim.SGD(model.parameters(), **sgd)


class RestartingOneCycleLR(torch.optim.lr_scheduler.OneCycleLR):
    """OneCycleLR over `total_steps` steps, started over `cycles` times in a row (warm restarts, as SGDR):
    step s of the run takes the lr and momentum of step s mod total_steps of one cycle."""

    def __init__(self, optimizer: torch.optim.Optimizer, cycles: int, **one_cycle) -> None:
        self.cycles = cycles
        super().__init__(optimizer, **one_cycle)

    def get_lr(self):
        step = self.last_epoch
        # The step after the run's last batch (no batch uses it) stays at the cycle's end, as in OneCycleLR.
        self.last_epoch = step % self.total_steps if step < self.cycles * self.total_steps else self.total_steps
        try:
            return super().get_lr()
        finally:
            self.last_epoch = step


ONECYCLE_WARMUP = 0.2  # the share of a cycle's steps that warm up
# Under onecycle the momentum (Adam: beta1) runs against the lr, as in Smith's one-cycle policy: from momentum + 0.05
# down to momentum - 0.05 at the peak lr and back. At momentum 0.9 that is torch's OneCycleLR default (0.95 -> 0.85),
# which every onecycle run had before the key took effect here (2026-11-27): those runs repeat bit for bit.
ONECYCLE_MOMENTUM_SWING = 0.05


def onecycle_momentum(momentum: float) -> dict:
    """OneCycleLR's momentum arguments for config.momentum: cycled around it, or none at all at 0 (plain SGD)."""
    return dict(cycle_momentum=momentum > 0,
                base_momentum=round(max(0.0, momentum - ONECYCLE_MOMENTUM_SWING), 10),  # 0.9 - 0.05: 0.85, not ..01
                max_momentum=round(min(0.999, momentum + ONECYCLE_MOMENTUM_SWING), 10))


def check_schedule(config: Config, steps_per_epoch: int) -> None:
    """UserError if the schedule cannot run over this many steps (fit checks before it creates the run directory):
    torch's OneCycleLR ends its warm-up at step warm-up share x steps - 1, and divides by zero when that is step 0."""
    steps = config.cycle_epochs * steps_per_epoch
    if config.schedule == "onecycle" and float(ONECYCLE_WARMUP * steps) - 1 == 0:
        per_cycle = " per cycle" if config.cycles > 1 else ""
        raise UserError(f"schedule onecycle over {steps} steps{per_cycle} makes torch's OneCycleLR divide by zero (its "
                        "warm-up would end at step 0); train on more images or epochs, change batch_size, or set "
                        "schedule = \"constant\"")


def make_scheduler(config: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """Stepped once per batch. `constant` keeps the lr; `onecycle` peaks at config.lr, once per cycle."""
    check_schedule(config, steps_per_epoch)
    if config.schedule == "onecycle":
        one_cycle = dict(max_lr=config.lr, epochs=config.cycle_epochs, steps_per_epoch=steps_per_epoch,
                         pct_start=ONECYCLE_WARMUP, anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0,
                         **onecycle_momentum(config.momentum))
        if config.cycles > 1:
            return RestartingOneCycleLR(optimizer, config.cycles, **one_cycle)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, **one_cycle)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def make_ema(config: Config, model: nn.Module) -> AveragedModel | None:
    """With config.ema > 0, an exponential moving average of the model's weights and buffers (so BatchNorm's
    running statistics are averaged too), which TrainStep updates after every optimizer step."""
    if config.ema == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)


class NonFiniteLoss(Exception):
    """Raised by TrainStep before the optimizer steps, so the weights stay finite."""

    def __init__(self, loss: float):
        super().__init__(f"loss {loss}")
        self.loss = loss


class TrainStep:
    """One optimizer step on a batch: forward and loss under the config's precision, backward,
    optimizer and scheduler step. With `replicas = N`, N copies of the model each take a share of
    the batch in their own thread (replicas.py). Returns the batch's logits and mean loss, detached."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, config: Config,
                 scheduler=None, device: torch.device = torch.device("cpu"), ema: AveragedModel | None = None,
                 teacher=None):
        self.model, self.optimizer, self.scheduler, self.device, self.ema = model, optimizer, scheduler, device, ema
        self.precision, self.label_smoothing = config.precision, config.label_smoothing
        if (teacher is None) != (config.distill_weight == 0):
            raise ValueError("TrainStep needs a teacher (distill.load_teacher) exactly when distill_weight > 0")
        self.teacher, self.distill_weight = teacher, config.distill_weight
        self.sam = config.sam
        self.last_lr = optimizer.param_groups[0]["lr"]
        self.layout = memory_format(config)
        self.replicas = ThreadReplicas(model, config.replicas, self.forward_loss) if config.replicas > 1 else None

    def forward_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and mean loss; the replicas call it in their own threads (autocast state is per thread).
        With a teacher (distill.py) the loss mixes the labels' term with the teachers' soft term."""
        with autocast_context(self.device, self.precision):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
            if self.teacher is not None:
                loss = (1 - self.distill_weight) * loss + self.distill_weight * self.teacher.loss(logits, x)
        return logits, loss

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = x.to(self.device, memory_format=self.layout), y.to(self.device)
        if self.replicas is None:
            self.model.train()
            logits, loss = self.forward_loss(self.model, x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        else:
            logits, loss = self.replicas.forward_backward(x, y)
        if not torch.isfinite(loss):  # before the step, which a NaN would spoil (on a GPU: a wait per step)
            raise NonFiniteLoss(loss.item())
        if self.sam:
            moved_loss = self.sharpness_aware_gradient(x, y)
            if not torch.isfinite(moved_loss):  # its gradient is the one the optimizer would step with
                raise NonFiniteLoss(moved_loss.item())
        self.last_lr = self.optimizer.param_groups[0]["lr"]  # the lr this step trains with (the epoch line shows it)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.replicas is not None:
            self.replicas.synchronize()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return logits.detach(), loss.detach()

    def sharpness_aware_gradient(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """SAM (Foret et al., 2021): replace the gradients by those at w + rho * g / ||g|| (g: the gradient at w,
        all parameters as one vector), then put the weights back at w for the optimizer's step: copied back, since
        w + e - e is w only up to float rounding. BatchNorm's running statistics keep the first pass's update only
        (momentum 0 in the second). Returns the loss at the moved weights."""
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        gradients = [p.grad for p in parameters]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gradients]))
        with torch.no_grad():
            unmoved = [p.clone() for p in parameters]
            torch._foreach_add_(parameters, torch._foreach_mul(gradients, self.sam / (norm + 1e-12)))
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        kept = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
        try:
            for m in norms:
                m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
            self.optimizer.zero_grad(set_to_none=True)
            _, loss = self.forward_loss(self.model, x, y)
            loss.backward()
        finally:
            for m, (momentum, tracked) in zip(norms, kept):
                m.momentum = momentum
                if tracked is not None:
                    m.num_batches_tracked.copy_(tracked)
            with torch.no_grad():
                torch._foreach_copy_(parameters, unmoved)
        return loss.detach()

    def close(self) -> None:
        if self.replicas is not None:
            self.replicas.close()


# ---------------------------------------------------------------------------- evaluation

@dataclass
class Evaluation:
    loss: float  # mean cross-entropy per sample
    accuracy: float  # percent
    correct: int
    predictions: torch.Tensor  # int64 [N]


def evaluate_checkpoint(checkpoint: dict, images: torch.Tensor, labels: torch.Tensor,
                        device: torch.device) -> Evaluation:
    """The checkpoint's model on uint8 images [N, H, W], evaluated as its run evaluated each epoch: the
    run's normalization, precision, memory format and batch size, so a checkpoint of a bf16 run reads
    the accuracy its metrics.jsonl logged (fp32 would differ by a few images)."""
    size, classes = checkpoint.get("image_size"), checkpoint.get("classes")  # recorded since 2026-11-27
    dataset = checkpoint["config"].get("dataset", "mnist")
    if size is not None and tuple(images.shape[1:]) != tuple(size):
        raise UserError(f"the test images of {dataset} are {images.shape[1]}x{images.shape[2]} now, and the "
                        f"checkpoint's model was trained on {size[0]}x{size[1]}: the data set changed since training; "
                        "restore it, or train again")
    if classes is not None and len(labels) and int(labels.max()) >= len(classes):
        raise UserError(f"the test labels of {dataset} go up to {int(labels.max())} now, and the checkpoint's model "
                        f"knows {len(classes)} classes: the data set changed since training; restore it, or train again")
    now = len(dataset_info(dataset).classes)  # what its confusion matrix is drawn over

    def refuse_changed(trained: int) -> None:
        raise UserError(f"{dataset} has {now} classes now, and the checkpoint's model was trained on {trained}: the "
                        f"data set (or its {DATASET_TOML}) changed since training; restore it, or train again")

    if classes is not None and len(classes) != now:
        refuse_changed(len(classes))
    config = resolve(Config(), {key: value for key, value in checkpoint["config"].items() if key in FIELD_TYPES},
                     source="checkpoint config")
    layout = memory_format(config)
    model = model_from_checkpoint(checkpoint).to(device, memory_format=layout)
    inputs = normalize(images, checkpoint["mean"], checkpoint["std"]).contiguous(memory_format=layout)
    result = evaluate(model, inputs, labels, device, config.eval_batch_size, config.precision)
    if len(result.predictions) and int(result.predictions.max()) >= now:  # a checkpoint from before `classes`
        refuse_changed(int(result.predictions.max()) + 1)
    return result


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy with each BatchNorm folded into the conv before it (torch.fx `fuse`).
    Same function up to float rounding, one pass over memory less per layer: evaluation of
    lean-8k runs 1.44x faster in fp32 (docs/speed.md). The model's weights are left untouched;
    the model itself is left in eval mode. A net torch.fx cannot trace (a user's net that calls `len(x)` or
    branches on a tensor) is evaluated as it is: folding is only a speed-up."""
    if not has_batchnorm(model):
        return model.eval()
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model.eval(), inplace=False)
    except Exception:  # symbolic tracing raises TraceError, TypeError, RuntimeError... for what it cannot follow
        return model


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


def recompute_batchnorm(model: nn.Module, inputs: torch.Tensor, device: torch.device, batch_size: int,
                        precision: str = "fp32") -> None:
    """Precise BN: replace the BatchNorm running statistics of `model` by their exact averages over
    `inputs` (normalized images), in batches of `batch_size`, under the run's precision. torch's
    `update_bn` does the pass, with dropout off: the statistics are those of the plain images evaluation sees
    (with dropout on, a BatchNorm after it averaged the dropout's extra variance: 49.18% against 55.37% for a
    2-epoch seed-lean run at dropout 0.2, a review). The global random state (CPU, and CUDA's) is kept, so a net
    with dropout trains on as it would have (not on MPS: torch.random.fork_rng keeps one device type, and this one
    is CUDA). The weights are untouched (train-mode BatchNorm never reads these statistics)."""
    from mnist_ops.models import DROPOUT_LAYERS

    batches = [inputs[start:start + batch_size] for start in range(0, len(inputs), batch_size)]
    dropouts = [module for module in model.modules() if isinstance(module, DROPOUT_LAYERS)]

    def without_dropout():  # update_bn puts the whole model in train mode before it reads the first batch
        for module in dropouts:
            module.eval()
        yield from batches

    cuda = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), autocast_context(device, precision):
        update_bn(without_dropout(), model, device)  # and back in the mode it was in after the last


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, device: torch.device,
             batch_size: int = 1000, precision: str = "fp32", progress=None) -> Evaluation:
    """Deterministic: eval mode (BatchNorm folded), no augmentation, fixed order."""
    model = fold_batchnorm(model)
    loss_sum = torch.zeros((), dtype=torch.float64)
    predictions = []
    for start in range(0, len(labels), batch_size):
        # a copy: a net that changes its input in place (x.mul_(2)) would change the held inputs of later epochs
        x = inputs[start:start + batch_size].to(device, copy=True)
        y = labels[start:start + batch_size].to(device)
        with autocast_context(device, precision):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").cpu().double()  # MPS has no float64
        predictions.append(logits.argmax(dim=1).cpu())
        if progress is not None:
            progress(len(y), loss_sum, torch.cat(predictions), labels[:start + len(y)])
    predictions = torch.cat(predictions)
    correct = int((predictions == labels).sum())
    return Evaluation(loss_sum.item() / len(labels), correct / len(labels) * 100, correct, predictions)


# ---------------------------------------------------------------------------- checkpoints

def checkpoint_decision(epoch: int, accuracy: float, best_before: float, target: float,
                        split: str = "test") -> tuple[bool, str]:
    """The seed's rule: save when epoch >= 3, accuracy (on `split`) is a new best and >= the target."""
    if epoch < CHECKPOINT_MIN_EPOCH:
        return False, f"no checkpoint before epoch {CHECKPOINT_MIN_EPOCH}"
    if accuracy <= best_before:
        return False, f"not a new best ({accuracy:.2f}% <= {best_before:.2f}%)"
    if accuracy < target:
        return False, f"new best {accuracy:.2f}% is below the target {target:.2f}%"
    return True, f"Target achieved: {accuracy:.2f}% {split} accuracy, new best: saved best.pt"


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def find_checkpoint(path: str | os.PathLike, log=print) -> Path:
    """A checkpoint file as given, or a run directory's best.pt, else its last.pt (saying which)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                log(f"using {path / name}" + ("" if name == "best.pt" else
                                               " (no best.pt: no epoch from 3 on reached the target)"))
                return path / name
        raise UserError(f"{path} holds no best.pt or last.pt; pass a run directory written by mnist-ops train")
    if path.exists() and not path.is_file():  # a device, a pipe: nothing torch.load could read
        raise UserError(f"checkpoint {path} is not a regular file; pass a run directory, or a best.pt or last.pt")
    if not path.is_file():
        hint = "pass a run directory, or a best.pt or last.pt from one"
        if path.name == "best.pt" and (path.parent / "last.pt").is_file():
            hint = (f"no epoch from {CHECKPOINT_MIN_EPOCH} on reached the target; use {path.parent / 'last.pt'} "
                    f"or the run directory {path.parent}")
        raise UserError(f"checkpoint {path} not found; {hint}")
    return path


@dataclass
class TrainedOn:
    """What a checkpoint's model was trained on, as predict and export need it."""
    dataset: str
    labels: list[str]
    image_size: tuple[int, int]
    transposed: bool  # the data set's IDX files hold images transposed (EMNIST's)


def trained_on(checkpoint: dict, path) -> TrainedOn:
    """From the checkpoint, which has kept class names, image size and transposition since 2026-11-27, so the data set
    may have moved since; an older checkpoint's from the data set."""
    dataset = checkpoint["config"].get("dataset", "mnist")
    labels, size = checkpoint.get("classes"), checkpoint.get("image_size")
    if labels is None:
        try:
            labels = list(dataset_info(dataset).classes)
        except UserError as error:
            raise UserError(f"checkpoint {path} predates the class names in checkpoints, and its data set is gone "
                            f"({error}); put the data set back where it was trained to use it") from None
    if not (isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels)):
        raise UserError(f"checkpoint {path} is not an mnist-ops checkpoint (bad classes)")
    if size is None:
        size = [28, 28]
    if not (isinstance(size, list) and len(size) == 2 and all(type(side) is int and 0 < side < 1 << 16
                                                                   for side in size)):
        raise UserError(f"checkpoint {path} is not an mnist-ops checkpoint (bad image_size)")
    transposed = bool(checkpoint.get("transposed", stored_transposed(dataset)))
    return TrainedOn(dataset, labels, (size[0], size[1]), transposed)


CHECKPOINT_FIX = "pass a best.pt or last.pt written by mnist-ops train"


def load_checkpoint(path: str | os.PathLike, data: bytes | None = None, fix: str = CHECKPOINT_FIX) -> dict:
    """Load with weights_only=True: a file that would run code when unpickled is refused. `data`, if
    given, is the file's bytes, already read (a caller that also hashes them reads the file once). `fix` ends the
    error of a file that is not a readable checkpoint."""
    path = find_checkpoint(path, log=lambda message: None)
    try:
        with warnings.catch_warnings():  # torch warns of a plain pickle's protocol before refusing it: one line
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path if data is None else io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt, truncated or unsafe file
        raise UserError(f"checkpoint {path} is unreadable ({type(error).__name__}); {fix}") from None
    if not isinstance(checkpoint, dict) or not CHECKPOINT_FIELDS.keys() <= set(checkpoint):
        raise UserError(f"checkpoint {path} is not an mnist-ops checkpoint "
                        f"(needs keys {', '.join(sorted(CHECKPOINT_FIELDS))}); {fix}")
    # It unpickled safely, but can still hold anything: check what readers use before they use it.
    wrong = [key for key, valid in CHECKPOINT_FIELDS.items() if not valid(checkpoint[key])]
    if wrong:
        raise UserError(f"checkpoint {path} is not an mnist-ops checkpoint (bad {', '.join(wrong)}); {fix}")
    known = {key: value for key, value in checkpoint["config"].items() if key in FIELD_TYPES}
    resolve(Config(), known, source=f"checkpoint {path}: config")  # a UserError naming the bad key
    problem = _model_source_problem(checkpoint)
    if problem:
        raise UserError(f"checkpoint {path}: {problem}; pass a best.pt or last.pt written by mnist-ops train")
    return checkpoint


def _model_source_problem(checkpoint: dict) -> str | None:
    """What is wrong with the record of the code that builds the checkpoint's model, if anything.

    model_from_checkpoint calls that code, so a record may hold only what fit writes: a crafted one
    could otherwise call any importable function with any arguments (`subprocess:getoutput` with a
    shell command) once the checkpoint is loaded, weights_only or not."""
    if "model_source" not in checkpoint:  # written before checkpoints recorded it: a built-in model
        name = checkpoint["model_name"]
        return None if name in list_models() else f"model {show(name)} is not a built-in model"
    source = checkpoint["model_source"]
    if not isinstance(source, dict) or source.get("kind") not in MODEL_SOURCE_KINDS:
        return f"model_source {show(source)} is not a build record"
    kind, target, kwargs = source["kind"], source.get("target"), source.get("kwargs")
    if not (isinstance(target, str) and isinstance(source.get("reference"), str)
            and all(source.get(key) is None or isinstance(source[key], str)
                    for key in ("file", "sha256", "distribution"))):
        return f"model_source {show(source)} is not a build record"
    named = kind in ("registered", "entry point")  # a name; a file or module model is "where:attribute"
    if named == (":" in target) or (kind == "registered" and target not in list_models()):
        return f"a {kind} model cannot be {show(target)}"
    if kind == "file" and not (source.get("file") and source.get("sha256")):
        return f"model {show(target)} comes from a file but the record holds no file and sha256"
    if not (isinstance(kwargs, dict) and all(key in MODEL_SOURCE_KWARGS and MODEL_SOURCE_KWARGS[key](value)
                                             for key, value in kwargs.items())):
        return (f"the model's builder would be called with {show(kwargs)}; mnist-ops train passes only "
                f"{' and '.join(MODEL_SOURCE_KWARGS)}")
    return None


def random_states(generator: torch.Generator) -> dict:
    """Every random state a run draws from, as tensors and plain values (weights_only-loadable):
    the shuffling/augmentation generator, torch's global generator (dropout masks, FastDropout's
    seeds), numpy's and Python's; and the current GPU's generator once this process has used CUDA
    (dropout masks of a model on a GPU)."""
    _, keys, position, has_gauss, gauss = np.random.get_state()
    python_version, python_state, python_gauss = random.getstate()
    states = {
        "generator": generator.get_state(), "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": python_version, "state": list(python_state), "gauss": python_gauss},
    }
    if torch.cuda.is_initialized():  # a run trains on one GPU: the current one
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_random_states(states: dict, generator: torch.Generator) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["gauss"]))
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    # a run that used CUDA, resumed on a GPU (on the CPU its numbers differ anyway, and fit warns of the device change)
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
