"""Knowledge distillation: a student trained on trained nets' softened predictions as well as the labels.

`teacher = "a/last.pt,b/last.pt"` names one or more checkpoints of finished runs. Each batch (the same
augmented images the student sees) goes through every teacher in eval mode, under no_grad, and their
softmax at temperature T is averaged. TrainStep's loss is then
    (1 - distill_weight) * cross-entropy(labels) + distill_weight * T^2 * KL(teachers || student at T)
(Hinton et al. 2015; the T^2 keeps the soft term's gradients on the scale of the hard one's).

The teachers cost a forward pass each per step. They must not have seen what the run evaluates on:
with a validation split, a teacher must hold out the same images (`validation` equal), else it
trained on them and the student's validation accuracy would read too high.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mnist_ops.config import Config, teacher_files
from mnist_ops.engine import find_checkpoint, fold_batchnorm, load_checkpoint, model_from_checkpoint
from mnist_ops.errors import UserError


class Teacher:
    """The teachers' averaged probabilities at a temperature, for inputs normalized as the student's."""

    def __init__(self, models: list[nn.Module], scales: list[tuple[float, float]], temperature: float,
                 checksums: dict[str, str]):
        self.models, self.scales, self.temperature = models, scales, temperature
        self.checksums = checksums  # checkpoint file -> sha256: fit stores it, and a resume compares it

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = None
        for model, (scale, shift) in zip(self.models, self.scales):
            inputs = x if (scale, shift) == (1.0, 0.0) else x * scale + shift  # into the teacher's normalization
            p = F.softmax(model(inputs).float() / self.temperature, dim=1)
            probabilities = p if probabilities is None else probabilities + p
        return probabilities / len(self.models)

    def loss(self, student_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The soft term for the student's logits on inputs `x` (TrainStep mixes it with the labels' term)."""
        return distillation_loss(student_logits, self.probabilities(x), self.temperature)


def distillation_loss(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student), both at temperature T, averaged over the batch's samples."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_student, teacher_probabilities, reduction="batchmean") * temperature ** 2


def checked_teachers(config: Config) -> list[tuple[str, dict, str]]:
    """(file, checkpoint, sha256) of each of the config's teachers, refused by name if it cannot teach this
    run: unreadable, trained on other data, trained on the images this run validates on, or an epoch picked
    on the images this run is judged on. Studies and tune call it before training anything."""
    teachers = []
    for path in teacher_files(config.teacher):
        try:
            path = str(find_checkpoint(Path(path) / "last.pt" if Path(path).is_dir() else path,  # a run: its last epoch
                                       log=lambda line: None))
            data = Path(path).read_bytes()  # once: what is loaded is what is hashed
            checkpoint = load_checkpoint(path, data)
        except OSError as error:
            raise UserError(f"teacher {path} is unreadable ({error.strerror}); pass a readable checkpoint") from None
        except UserError as error:
            raise UserError(f"teacher: {error}") from None
        trained = {**Config().to_dict(), **checkpoint["config"]}
        where = f"teacher {path}"
        if trained["dataset"] != config.dataset:
            raise UserError(f"{where} was trained on {trained['dataset']}, this run trains on {config.dataset}; "
                            "pass a teacher trained on the same data set")
        if config.validation and trained["validation"] != config.validation:
            held = f"held out {trained['validation']:,}" if trained["validation"] else "held out no"
            raise UserError(f"{where} {held} training images, this run validates on {config.validation:,}: the "
                            "teacher trained on images this run validates on; pass a teacher trained with "
                            f"--validation {config.validation}")
        if config.validation and trained["validation_from"] != config.validation_from:  # 495 of 500 overlap (a review)
            raise UserError(f"{where} held out the {trained['validation_from']} {config.validation:,} training images, "
                            f"this run validates on the {config.validation_from} {config.validation:,}: the teacher "
                            "trained on most of the images this run validates on; pass a teacher trained with "
                            f"--validation-from {config.validation_from}")
        final = trained["epochs"] - 1
        if checkpoint["epoch"] != final and trained["validation"] == config.validation:
            split = f"the {config.validation:,} held-out images" if config.validation else "the test set"
            raise UserError(f"{where} holds epoch {checkpoint['epoch']} of {final + 1} (numbered from 0): an epoch "
                            f"picked by its accuracy on {split} (a best.pt), or a run still training, and this run "
                            f"is judged on {split} too; pass the last.pt of a finished run")
        teachers.append((path, checkpoint, hashlib.sha256(data).hexdigest()))
    return teachers


def load_teacher(config: Config, mean: float, std: float, device: torch.device,
                 layout: torch.memory_format = torch.contiguous_format,
                 log=lambda line: None) -> Teacher | None:
    """The config's teachers (checked_teachers), or None without one. `mean`, `std`: the student's input
    normalization; each teacher's own is applied on top."""
    teachers = checked_teachers(config)
    if not teachers:
        return None
    models, scales, checksums = [], [], {}
    for path, checkpoint, checksum in teachers:
        models.append(fold_batchnorm(model_from_checkpoint(checkpoint)).to(device, memory_format=layout))
        scales.append((std / checkpoint["std"], (mean - checkpoint["mean"]) / checkpoint["std"]))
        checksums[path] = checksum
        accuracy = {key: value for key, value in checkpoint["metrics"].items() if key.endswith("_accuracy")
                    and not key.startswith("train")}
        log(f"teacher {path}: {checkpoint['model_name']}, epoch {checkpoint['epoch']}"
            + "".join(f", {key.replace('_', ' ')} {value:.2f}%" for key, value in accuracy.items())
            + f", sha256 {checksum[:12]}")
    return Teacher(models, scales, config.distill_temperature, checksums)


def refuse_changed_teachers(saved, teacher: Teacher | None, out: Path) -> None:
    """A run resumes with the teacher files it started with (a checkpoint's `teachers`: file -> sha256;
    absent in checkpoints written before it was recorded)."""
    now = teacher.checksums if teacher is not None else {}
    if saved is None or saved == now:  # None: written before checkpoints recorded their teachers, or taught by none
        return
    if not isinstance(saved, dict):
        raise UserError(f"{out / 'last.pt'} records its teachers as {saved!r}, not as files and checksums; "
                        "start a new run with another --out")
    changed = next(path for path in [*now, *saved] if saved.get(path) != now.get(path))
    raise UserError(f"cannot resume {out}: teacher {changed} changed since the run started (sha256 "
                    f"{str(saved.get(changed, 'none'))[:12]} then, {str(now.get(changed, 'none'))[:12]} now); "
                    "put the original file back, or start a new run with another --out")
