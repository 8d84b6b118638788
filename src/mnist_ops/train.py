"""Training: one explicit `fit()` loop that writes a run directory, and resumes it after a kill.

The loop reads top to bottom: load data, build model, optimizer and schedule (or restore them
from `last.pt`), then per epoch train (`engine.TrainStep`), evaluate, save checkpoints, log.
The engine (engine.py) holds everything below the loop.

Per epoch, files are written in this order: best.pt (if the seed's rule says so), last.pt, then
metrics.jsonl. `last.pt` is the commit point: it carries the whole history, so a run killed at
any moment resumes from the last finished epoch and rewrites metrics.jsonl from it at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import torch

from mnist_ops import tensorboard
from mnist_ops.analysis import format_receptive_field, model_summary, receptive_field
from mnist_ops.batches import FitData, fit_batches, load_fit_data, normalize
from mnist_ops.config import Config, changed_keys, check_combination, to_toml
from mnist_ops.engine import (CHECKPOINT_MIN_EPOCH, NonFiniteLoss, TrainStep, build_model, check_schedule,
                              checkpoint_decision, evaluate, has_batchnorm, load_checkpoint, make_ema, make_optimizer, make_scheduler, memory_format,
                              random_states, recompute_batchnorm, resolve_device, restore_random_states,
                              save_checkpoint, seed_everything)
from mnist_ops.data import dataset_info
from mnist_ops.distill import load_teacher, refuse_changed_teachers
from mnist_ops.errors import TrainingDiverged, UserError
from mnist_ops.fileio import (DirectoryLock, atomic_write_bytes, atomic_write_json, read_toml,
                              remove_stale_temporaries, write_jsonl)
from mnist_ops.models import (DROPOUT_LAYERS, build_record, count_parameters, first_line, importable_as_recorded,
                              raised_in_own_net)
from mnist_ops.provenance import ENVIRONMENT_FILE, run_provenance
from mnist_ops.replicas import one_thread_per_replica

ACCURACY_DIGITS = 4  # 100 * correct / N, rounded: exact for N = 10,000 (2 decimals) and 60,000
LOSS_DIGITS = 6
RESUME_KEYS = {"optimizer", "scheduler", "random_states", "history", "best_accuracy", "best_epoch"}
EMA_KEYS = {"train_model", "ema_updates"}  # with ema > 0: the trained weights ("model" is their average)
TIMING_KEYS = ("seconds", "train_images_per_second")  # the only fields that differ between repeated runs


def _progress_bar(enabled: bool, total: int, description: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="img", unit_scale=False, leave=True, dynamic_ncols=True)


def _bar_due(bar) -> bool:
    """True when tqdm will redraw at its next update: refresh the shown numbers that often."""
    return time.time() - bar.last_print_t >= bar.mininterval


def epoch_config(config: Config, epoch: int) -> Config:
    """The config epoch `epoch` trains with: augmentation (and train_crop) off in the last `plain_epochs` epochs
    (of each cycle)."""
    first_plain = config.cycle_epochs - config.plain_epochs  # within each cycle
    return config.replace(augment="none", train_crop=0) if epoch % config.cycle_epochs >= first_plain else config


def train_one_epoch(step: TrainStep, data: FitData, config: Config, generator: torch.Generator,
                    bar=None) -> tuple[float, float]:
    """One pass over shuffled training data; returns (mean loss per sample, accuracy %)."""
    # running sums stay on the model's device: copied to the CPU only when the bar redraws and at the end
    # (in float64, but for MPS, which has none)
    loss_sum = torch.zeros((), dtype=torch.float32 if step.device.type == "mps" else torch.float64, device=step.device)
    correct = torch.zeros((), dtype=torch.int64, device=step.device)
    seen = 0
    for number, (x, y) in enumerate(fit_batches(data.train, config, data.mean, data.std, generator)):
        try:
            logits, loss = step(x, y)
        except NonFiniteLoss as error:
            error.step = number
            raise
        loss_sum += loss.detach().to(loss_sum.dtype) * len(y)
        correct += (logits.argmax(dim=1) == y.to(logits.device)).sum()
        seen += len(y)
        if bar is not None:
            if _bar_due(bar) or seen == len(data.train):  # .item() syncs: only when the bar shows it
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen * 100:.2f}%",
                                refresh=False)
            bar.update(len(y))
    return loss_sum.item() / seen, correct.item() / seen * 100


def run_environment(device: torch.device) -> dict:
    """What a reader needs to repeat the run: code version and commit, torch, threads, device."""
    return {**run_provenance(), "device": str(device)}


def write_environment(path: Path, environment: dict, log: Callable[[str], None], resumed: bool) -> None:
    """environment.json: the first invocation's record, plus one per resume (a warning when threads,
    torch or the code differ: the run then no longer repeats an uninterrupted one exactly). A run
    started over (no epoch had finished) gets a new record."""
    if resumed and path.is_file():
        first = json.loads(path.read_text())
        changed = [key for key in ("threads", "torch", "commit") if first.get(key) != environment.get(key)]
        if changed:
            log(f"warning: {', '.join(changed)} differ from the run's start ({path}); the resumed run may not "
                "equal an uninterrupted one")
        record = {**first, "resumes": [*first.get("resumes", []), environment]}
    else:
        record = environment
    atomic_write_json(path, record)


def _diverged_advice(epoch: int, config: Config) -> str:
    return ("the run stopped and last.pt holds " + (f"epoch {epoch - 1}" if epoch else "no epoch yet") +
            f"; start a new run with a lower lr (e.g. --lr {config.lr / 10:g}) and another --out")


def _restore(checkpoint: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
             generator: torch.Generator, ema, path: Path) -> None:
    """Model, optimizer, scheduler and random states from last.pt. It loaded with weights_only, but a
    damaged or crafted file can still hold state that fails here or at the first step: check it first."""
    def refuse(problem: str) -> UserError:
        return UserError(f"{path} holds resume state that does not fit this run ({problem}); "
                         "start a new run with another --out")

    history, best = checkpoint["history"], (checkpoint["best_accuracy"], checkpoint["best_epoch"])
    if not isinstance(history, list) or any(not isinstance(record, dict) or record.get("epoch") != epoch
                                            for epoch, record in enumerate(history)):
        raise refuse("its history is not one record per epoch")
    if any(isinstance(value, bool) or not isinstance(value, (int, float)) for value in best):
        raise refuse("its best accuracy or epoch is not a number")
    expected, state = scheduler.state_dict(), checkpoint["scheduler"]
    # LRScheduler.load_state_dict copies every key into the scheduler's attributes: take only its own
    # keys (another torch version may have fewer), each holding what this schedule holds there
    if not isinstance(state, dict) or not set(state) <= set(expected) or not all(
            _same_kind(state[key], expected[key]) for key in state):
        raise refuse("its lr schedule state is not this schedule's")
    groups = checkpoint["optimizer"].get("param_groups") if isinstance(checkpoint["optimizer"], dict) else None
    if not _same_kind(groups, optimizer.state_dict()["param_groups"]):  # lr, momentum...: numbers, as here
        raise refuse("its optimizer settings are not this optimizer's")
    if ema is not None and (isinstance(checkpoint["ema_updates"], bool) or not isinstance(checkpoint["ema_updates"], int)
                            or checkpoint["ema_updates"] < 0):
        raise refuse("its count of averaged steps is not a count")
    try:
        if ema is None:
            model.load_state_dict(checkpoint["model"])
        else:
            model.load_state_dict(checkpoint["train_model"])
            ema.module.load_state_dict(checkpoint["model"])
            ema.n_averaged.fill_(checkpoint["ema_updates"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group in optimizer.param_groups:  # load_state_dict checks the groups' sizes, not the buffers' shapes
            for parameter in group["params"]:
                for name, value in optimizer.state.get(parameter, {}).items():
                    if torch.is_tensor(value) and value.dim() and value.shape != parameter.shape:
                        raise ValueError(f"optimizer {name} of shape {tuple(value.shape)} for a parameter "
                                         f"of shape {tuple(parameter.shape)}")
        scheduler.load_state_dict(state)
        restore_random_states(checkpoint["random_states"], generator)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise refuse(" ".join(str(error).split())[:200] or type(error).__name__) from None  # one line


def _same_kind(value, like) -> bool:
    """`value` has the structure of `like`: numbers where it has numbers, lists of its length, dicts with
    some of its keys (another torch version may store fewer; None in `like` takes anything)."""
    if like is None:
        return True
    if isinstance(like, bool) or isinstance(value, bool):
        return type(value) is type(like)
    if isinstance(like, (int, float)):
        return isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(like, (list, tuple)):
        return (isinstance(value, (list, tuple)) and len(value) == len(like)
                and all(_same_kind(v, l) for v, l in zip(value, like)))
    if isinstance(like, dict):
        return isinstance(value, dict) and set(value) <= set(like) and all(_same_kind(value[k], like[k]) for k in value)
    return type(value) is type(like)


def _refuse_changed_config(checkpoint: dict, config: Config, out: Path, log: Callable[[str], None],
                           against: str = "last.pt against config.toml and your flags") -> None:
    # a key the run's config lacks (added to Config since) had its default value then
    saved = {**Config().to_dict(), **checkpoint["config"]}
    now = config.to_dict()
    changed = [f"{key} ({saved[key]!r} in the run, {now[key]!r} now)"
               for key in changed_keys(saved, now, ignore={"device"})]
    if changed:
        # "now" is the run's config.toml with this invocation's flags: name both, as either may be what changed
        raise UserError(f"cannot resume {out} with a different config: {'; '.join(changed)} ({against}); drop those "
                        "flags or restore config.toml, or start a new run with another --out")
    if saved["device"] != now["device"]:  # a run moved to another machine: continue it there, and say what it costs
        log(f"warning: {out} trained on {saved['device']} and resumes on {now['device']}: from here its numbers "
            "differ in the last digits from those the run would have computed there")


def _recorded_source(last: Path) -> dict:
    """How the run's last.pt says its net was built (models.build_record), or {}."""
    try:
        return load_checkpoint(last).get("model_source") or {} if last.is_file() else {}
    except UserError:  # resuming reports an unreadable last.pt itself
        return {}


def _model_as_recorded(config: Config, source: dict) -> Config:
    """The config to build the run's net from: as it is, unless its model is a file named by a relative path that
    is not there from here; then the absolute path the run's last.pt recorded (config.toml keeps what was typed)."""
    location = config.model.rpartition(":")[0]
    if not location.endswith(".py") or Path(location).is_absolute() or Path(location).expanduser().exists():
        return config
    if source.get("kind") == "file" and source.get("file") and Path(source["file"]).is_file():
        return config.replace(model=source["target"])
    return config


def check_runnable(config: Config, num_classes: int, image_size: tuple[int, int],
                   log: Callable[[str], None] | None = None) -> torch.nn.Module:
    """What `fit` refuses of a config before it writes anything, short of the data: the device, the model (its
    output, the crops it takes) and precise BN on a model with no BatchNorm. Returns the model, untrained. A study
    and a search call it for each recipe first, so that one that cannot train leaves no directory behind."""
    resolve_device("cpu" if config.replicas > 1 else config.device)
    model = build_model(config, num_classes, image_size, log)
    # FastDropout too: --fast-dropout swaps the net's Dropout for it before this check, which then let it by (a review)
    if config.replicas > 1 and any(isinstance(module, DROPOUT_LAYERS) and module.p > 0 for module in model.modules()):
        raise UserError(f"replicas = {config.replicas} needs a model without active dropout, and model {config.model} "
                        "has Dropout layers of its own (masks drawn in several threads would make runs unrepeatable); "
                        "set replicas = 1, or build the net without them")
    if config.precise_bn and not has_batchnorm(model):
        raise UserError(f"precise_bn = {config.precise_bn} recomputes BatchNorm statistics, and model "
                        f"{config.model} has no BatchNorm; set precise_bn = 0")
    return model


def _user_model_failed(config: Config, error: Exception, epoch: int, images: int) -> str:
    """One line for a net of the user's own that raised while training (check_output tried it in eval mode only)."""
    cause = first_line(error)
    last = images % config.batch_size
    hint = (f"; the epoch's last batch holds 1 image, and BatchNorm cannot train on 1: change batch_size or "
            "limit_train" if last == 1 and "Expected more than 1 value per channel" in cause
            else "; fix its forward() (it must run in train mode on any batch size)")
    return f"model {config.model} raised {cause} while training in epoch {epoch}{hint}"


def describe_recipe(config: Config, precise_bn_images: int, teacher=None) -> str:
    """The run's first log line: the precision and every recipe choice beyond the plain train step."""
    cycle = " of each cycle" if config.cycles > 1 else ""
    parts = [config.precision,
             config.replicas > 1 and f"{config.replicas} model copies (replicas)",
             config.cycles > 1 and f"{config.cycles} cycles of {config.cycle_epochs} epochs",
             config.plain_epochs and f"the last {config.plain_epochs} epoch(s){cycle} without augmentation",
             config.train_crop and f"the augmented epochs on random {config.train_crop} x {config.train_crop} crops",
             config.sam and f"sharpness-aware steps (SAM, rho {config.sam}: two gradients a step)",
             config.precise_bn and f"BatchNorm statistics recomputed over {precise_bn_images:,} plain training images "
                                   "before each evaluation (precise BN)",
             config.ema > 0 and f"evaluating an EMA of the weights (decay {config.ema}; it lags in the first epochs, "
                                "so a run of a few epochs may want --ema 0)",
             teacher is not None and f"distilling {len(teacher.models)} teacher(s) (weight {config.distill_weight}, "
                                     f"temperature {config.distill_temperature})"]
    return ", ".join(part for part in parts if part)


def lr_range(start: float, end: float) -> str:
    """The epoch line's lr: '0.015' when it held, '0.012→0.3' when the schedule moved it within the epoch: the lr
    of its first step and of its last (metrics.jsonl's `lr` is the first)."""
    return f"{start:.4g}" if f"{start:.4g}" == f"{end:.4g}" else f"{start:.4g}→{end:.4g}"


def fit(config: Config, out_dir: str | os.PathLike, data_root: str | os.PathLike | None = None,
        log: Callable[[str], None] = print, progress: bool = True,
        on_epoch: Callable[[int, dict], None] | None = None, resume: bool = False, made_for_it: bool = False) -> dict:
    """Train `config` into `out_dir` (or continue it from its last.pt with `resume`).

    `on_epoch(epoch, record)` runs after each epoch's files are written; an exception it raises
    stops the run (tuning prunes trials that way). `made_for_it`: the caller created `out_dir` (empty) for this run,
    which goes again if the run never starts, as one this call creates. Returns the run's summary dict."""
    started = time.perf_counter()
    check_combination(config)
    device = resolve_device("cpu" if config.replicas > 1 else config.device)  # replicas split over CPU cores
    config = config.replace(device=device.type)  # config.toml records the device used, not "auto"
    data = load_fit_data(config, data_root)  # before the run directory: missing data leaves no empty run dir
    evaluation_inputs = normalize(data.evaluation.images, data.mean, data.std).contiguous(
        memory_format=memory_format(config))
    name = data.evaluation_name  # "test", or "val" with a validation split: the metrics' key prefix
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    check_schedule(config, steps_per_epoch)  # before the run directory, as the data
    precise_bn_inputs = normalize(data.train.images[:config.precise_bn], data.mean, data.std).contiguous(
        memory_format=memory_format(config))  # plain, the first N (or all): no random draw, training runs as without
    teacher = load_teacher(config, data.mean, data.std, device, memory_format(config), log)  # None without one
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)  # shuffling and augmentation draws
    image_size = tuple(data.train.images.shape[1:])
    classes = dataset_info(config.dataset).classes
    # resumed from another working directory, a net of the user's own (a file by a relative path, package.module:build)
    # is found where the run found it
    source = _recorded_source(Path(out_dir) / "last.pt") if resume else {}
    with importable_as_recorded(source):  # before the run directory, as the data and the schedule
        model = check_runnable(_model_as_recorded(config, source), len(classes), image_size, log)
    now = build_record(model)
    if source.get("sha256") and now.get("sha256") != source["sha256"]:  # a net of one's own, edited mid-run
        raise UserError(f"cannot resume {out_dir}: model {source.get('reference')} is built by {now.get('file')} "
                        f"now, sha256 {str(now.get('sha256'))[:12]}, and the run started with {source.get('file')}, "
                        f"sha256 {source['sha256'][:12]}; put the original file back, or start a new run with "
                        "another --out")
    model = model.to(device, memory_format=memory_format(config))

    out = Path(out_dir)
    created = made_for_it or not out.exists()  # for this run: one refused in its first epoch takes it away (below)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create run directory {out}: {error.strerror}; pass another --out") from None
    lock = DirectoryLock(out).acquire()  # a second process training into `out` is refused
    step = board = None
    history: list[dict] = []
    discarded = False
    try:
        optimizer = make_optimizer(config, model)
        muon_params = [p for group in optimizer.param_groups if group.get("muon") for p in group["params"]]
        if config.optimizer == "muon" and not muon_params:
            log("optimizer muon: this net has no ungrouped conv outside its head for Muon; it trains as SGD")
        scheduler = make_scheduler(config, optimizer, steps_per_epoch)
        ema = make_ema(config, model)
        evaluated = model if ema is None else ema.module  # what is evaluated, and saved as the checkpoint's model
        # torchinfo draws its example input from torch's generator: keep it here, before training (and
        # before a resume restores the random states), so runs repeat those recorded before resume existed
        try:
            inspection = (model_summary(model, (1, 1, *image_size)) + "\n\nReceptive field\n"
                          + format_receptive_field(receptive_field(model, image_size)))
        except UserError as error:  # a net that trains though torchinfo cannot follow it: the run goes on without
            inspection = f"no layer table: {error}"
            log(f"summary.txt: {inspection}")
        best_accuracy, best_epoch = -1.0, -1

        remove_stale_temporaries(out)  # a kill during a write can leave one; we hold the lock now
        seconds_before = 0.0  # training time of earlier invocations of this run
        if resume and not (out / "last.pt").is_file():
            metrics = out / "metrics.jsonl"
            if metrics.is_file() and metrics.stat().st_size:  # written after last.pt: that was there, and is gone
                raise UserError(f"{out} lists finished epochs in metrics.jsonl but holds no last.pt to resume them "
                                "from (deleted?); restore it, or start a new run with another --out")
            if (out / "config.toml").is_file():  # a flag changes the run as it would once an epoch is done
                _refuse_changed_config({"config": read_toml(out / "config.toml")}, config, out, log,
                                       against="config.toml against your flags")
            log(f"{out} holds no finished epoch yet: starting it from the beginning")  # stopped in its first epoch
        elif resume:
            checkpoint = load_checkpoint(out / "last.pt", fix="the run cannot be resumed from it; start a new run with "
                                                              "another --out (its best.pt, if any, is still usable)")
            missing = sorted((RESUME_KEYS | (EMA_KEYS if ema is not None else set())) - set(checkpoint))
            if missing:
                raise UserError(f"{out / 'last.pt'} holds no resume state ({', '.join(missing)}): written by an "
                                "older mnist-ops; start a new run with another --out")
            _refuse_changed_config(checkpoint, config, out, log)
            refuse_changed_teachers(checkpoint.get("teachers"), teacher, out)
            _restore(checkpoint, model, optimizer, scheduler, generator, ema, out / "last.pt")
            history = checkpoint["history"]
            best_accuracy, best_epoch = checkpoint["best_accuracy"], checkpoint["best_epoch"]
            seconds_before = checkpoint.get("seconds", 0.0)
            write_jsonl(out / "metrics.jsonl", history)  # a kill between last.pt and metrics.jsonl loses nothing
            if len(history) == config.epochs:
                log(f"{out} is finished ({config.epochs} of {config.epochs} epochs): nothing left to train")
            else:
                log(f"resuming {out} after epoch {checkpoint['epoch']} of {config.epochs}")
        elif (out / "metrics.jsonl").exists() or (out / "last.pt").exists():
            raise UserError(f"{out} already holds a run; resume it with `mnist-ops train --resume {out}`, "
                            "or pass another --out")

        parameters = count_parameters(model)
        finished = len(history) == config.epochs  # resumed after its last epoch: the run is left as it was
        if not finished:
            atomic_write_bytes(out / "config.toml", to_toml(config.to_dict()).encode())
            write_environment(out / ENVIRONMENT_FILE, run_environment(device), log, resumed=bool(history))
        log(f"run {out}: preset {config.preset}, model {config.model} ({parameters:,} parameters), "
            f"device {device}, {describe_recipe(config, len(precise_bn_inputs), teacher)}, "
            f"{len(data.train):,} train / {len(data.evaluation):,} {name} images, mean {data.mean:.4f} std {data.std:.4f}")

        step = TrainStep(model, optimizer, config, scheduler, device, ema, teacher)
        board = tensorboard.open(out, model, evaluation_inputs[:2], log) if config.tensorboard and not finished else None
        for epoch in range(len(history), config.epochs):
            epoch_start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            bar = _progress_bar(progress, len(data.train), f"Train epoch {epoch}")
            try:
                with one_thread_per_replica(config.replicas):
                    train_loss, train_accuracy = train_one_epoch(step, data, epoch_config(config, epoch),
                                                                 generator, bar)
            except NonFiniteLoss as error:
                raise TrainingDiverged(f"training loss became {error.loss} at epoch {epoch}, step {error.step}",
                                       _diverged_advice(epoch, config)) from None
            except Exception as error:
                if isinstance(error, UserError) or not raised_in_own_net(error, model):
                    raise  # a failure of a built-in net, or outside the net: a bug here, whose traceback is wanted
                raise UserError(_user_model_failed(config, error, epoch, len(data.train))) from None
            finally:
                if bar is not None:
                    bar.close()
            train_seconds = time.perf_counter() - epoch_start
            if config.precise_bn:  # counted in the epoch's seconds, as the evaluation is
                # one thread with replicas, as they train: a reduction over the batch sums in another order on
                # two threads, and runs with replicas repeat across thread counts (tests/test_replicas.py)
                with one_thread_per_replica(config.replicas):
                    recompute_batchnorm(evaluated, precise_bn_inputs, device, config.batch_size, config.precision)
            test_bar = _progress_bar(progress, len(data.evaluation), f"{name.capitalize():<5} epoch {epoch}")

            def show(count, loss_sum, predictions, labels, bar=test_bar):
                bar.update(count)
                if _bar_due(bar) or len(labels) == len(data.evaluation):
                    bar.set_postfix(loss=f"{loss_sum.item() / len(labels):.4f}",
                                    acc=f"{(predictions == labels).double().mean().item() * 100:.2f}%", refresh=False)

            result = evaluate(evaluated, evaluation_inputs, data.evaluation.labels, device, config.eval_batch_size,
                              config.precision, show if test_bar is not None else None)
            if test_bar is not None:
                test_bar.close()
            # the step that blows up the weights can still have a finite loss: check them before saving
            if not math.isfinite(result.loss) or not all(torch.isfinite(value).all() for value in
                                                         [*model.state_dict().values(), *evaluated.state_dict().values()]
                                                         if value.is_floating_point()):
                raise TrainingDiverged(f"the weights became non-finite in epoch {epoch} ({name} loss {result.loss})",
                                       _diverged_advice(epoch, config))
            seconds = time.perf_counter() - epoch_start
            record = {
                "epoch": epoch, "train_loss": round(train_loss, LOSS_DIGITS),
                "train_accuracy": round(train_accuracy, ACCURACY_DIGITS),
                f"{name}_loss": round(result.loss, LOSS_DIGITS),
                f"{name}_accuracy": round(result.accuracy, ACCURACY_DIGITS), f"{name}_correct": result.correct,
                "lr": lr, "seconds": round(seconds, 3),
                "train_images_per_second": round(len(data.train) / train_seconds, 1),
            }
            history.append(record)

            # best.pt must beat the epochs that could have been saved: an early epoch above every later one
            # (possible in a short run) would otherwise keep best.pt from being written at all
            best_saveable = max((r[f"{name}_accuracy"] for r in history[:-1] if r["epoch"] >= CHECKPOINT_MIN_EPOCH),
                                default=-1.0)
            save, reason = checkpoint_decision(epoch, record[f"{name}_accuracy"], best_saveable,
                                               config.target_accuracy, "validation" if name == "val" else name)
            if record[f"{name}_accuracy"] > best_accuracy:
                best_accuracy, best_epoch = record[f"{name}_accuracy"], epoch
            checkpoint = {
                "model_name": config.model, "model_source": build_record(model), "model": evaluated.state_dict(),
                "config": config.to_dict(),
                "epoch": epoch, "metrics": record, "mean": data.mean, "std": data.std,
                "classes": list(classes), "image_size": list(image_size),  # what export needs if the data moves
                "transposed": dataset_info(config.dataset).transposed,  # how predict reads its IDX files (EMNIST's)
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "history": history, "best_accuracy": best_accuracy, "best_epoch": best_epoch,
                "random_states": random_states(generator),
                "seconds": round(seconds_before + time.perf_counter() - started, 1),  # over every invocation
            }
            if teacher is not None:  # which files taught it: a resume refuses changed ones
                checkpoint["teachers"] = teacher.checksums
            if ema is not None:  # "model" holds the average; training goes on from these
                checkpoint.update(train_model=model.state_dict(), ema_updates=int(ema.n_averaged))
            if save:
                save_checkpoint(out / "best.pt", checkpoint)
            save_checkpoint(out / "last.pt", checkpoint)  # the commit point of the epoch
            write_jsonl(out / "metrics.jsonl", history)
            if board is not None:
                board.epoch(record, data.evaluation.images, data.evaluation.labels, result.predictions,
                            "validation" if name == "val" else "test")
            log(f"epoch {epoch:2d}: train loss {train_loss:.4f} acc {train_accuracy:.2f}% | "
                f"{name} loss {result.loss:.4f} acc {result.accuracy:.2f}% | lr {lr_range(lr, step.last_lr)} | "
                f"{seconds:.1f}s ({record['train_images_per_second']:.0f} img/s) | {reason}")
            if on_epoch is not None:
                on_epoch(epoch, record)

        if board is not None:
            board.close()
        summary = finish_run(out, config, inspection, history, best_accuracy, best_epoch, parameters, device,
                             checkpoint.get("seconds", seconds_before), name,  # last.pt's: a later resume reads it
                             write=not finished or not (out / "summary.txt").is_file())  # killed before it: complete
        log(f"best {name} accuracy {best_accuracy:.2f}% (epoch {best_epoch}), "
            f"last {history[-1][f'{name}_accuracy']:.2f}%; wrote {out}")
        return summary
    except (UserError, OSError, KeyboardInterrupt) as error:
        # a net of one's own that fails to train...: nothing in the directory to resume or read; nor after a full disk
        # or Ctrl-C before config.toml was written (a directory holding only .lock was left then: a review)
        if created and not history and not isinstance(error, TrainingDiverged) and (
                isinstance(error, UserError) or not (out / "config.toml").is_file()):
            if board is not None:
                board.close()
            for path in [out / "config.toml", out / ENVIRONMENT_FILE, *out.glob("events.out.tfevents.*"), lock.path]:
                path.unlink(missing_ok=True)  # the lock's file last, still held: the directory is this call's
            discarded = True
        raise
    finally:
        if step is not None:
            step.close()
        lock.release()
        if discarded:
            with contextlib.suppress(OSError):  # another process may have begun a run there since
                out.rmdir()


def finish_run(out: Path, config: Config, inspection: str, history: list[dict], best_accuracy: float, best_epoch: int,
               parameters: int, device: torch.device, seconds: float, name: str, write: bool = True) -> dict:
    """The run's summary, and with `write` the end-of-run files: curves.png and summary.txt (rewritten whole, so a
    resume completes them)."""
    from mnist_ops.report import curve_notes, plot_curves

    if write:
        plot_curves(history, out / "curves.png", f"{config.preset}: {config.model}, seed {config.seed}",
                    *curve_notes(config))
    summary = {
        "preset": config.preset, "model": config.model, "parameters": parameters, "device": str(device),
        "epochs": config.epochs, f"best_{name}_accuracy": best_accuracy, "best_epoch": best_epoch,
        f"last_{name}_accuracy": history[-1][f"{name}_accuracy"],
        "last_train_accuracy": history[-1]["train_accuracy"],
        "seconds": round(seconds, 1), "run_dir": str(out),
    }
    if write:
        text = inspection + "\n\nResult\n" + "\n".join(f"{key}: {value}" for key, value in summary.items()) + "\n"
        atomic_write_bytes(out / "summary.txt", text.encode())
    return summary
