"""The `mnist-ops` command. User mistakes end in one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from pathlib import Path

from mnist_ops.errors import UserError, did_you_mean, import_torch_whole, interrupted_code, stop_on_sigterm
from mnist_ops.fileio import check_destination

UNRECOGNIZED = re.compile(r"unrecognized arguments: (?P<words>.*)")
INVALID_CHOICE = re.compile(r"invalid choice: '(?P<name>[^']*)' \(choose from (?P<choices>.*)\)")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (plus exit code 2), not a usage dump, and an
    unknown command or choice gets a "did you mean"."""

    def error(self, message: str) -> None:
        match = INVALID_CHOICE.search(message)
        if match:
            choices = re.findall(r"'([^']*)'", match["choices"])
            message = message.replace(match[0], match[0] + did_you_mean(match["name"], choices))
        help_command = self.prog
        if "required" in message:  # argparse stops at a missing flag before it reports the unknown ones: a typo
            flags = [flag for action in self._actions for flag in action.option_strings if flag != "--help"]
            typed = [word.split("=")[0] for word in self.command_line if word.startswith("--")]
            message += "".join(f"; {word} is not a flag{did_you_mean(word, flags)}" for word in typed
                               if not any(flag.startswith(word) for flag in flags)  # argparse takes --ou for --out
                               and did_you_mean(word, flags))
        unknown = UNRECOGNIZED.match(message)
        command = chosen_command(self, self.parsed)
        if unknown and command is not self:  # the top parser reports a command's unknown flags
            from mnist_ops.config import KEY_ALIASES

            flags = [flag for action in command._actions for flag in action.option_strings if flag != "--help"]
            aliases = {"--" + alias.replace("_", "-"): "--" + key.replace("_", "-") for alias, key in KEY_ALIASES.items()}
            message += "".join(did_you_mean(word.split("=")[0], flags, aliases) for word in unknown["words"].split()
                               if word.startswith("--"))
            help_command = command.prog
        self.exit(2, f"{self.prog}: error: {message} (see `{help_command} --help`)\n")

    parsed: argparse.Namespace | None = None  # what parse_known_args found, for the error it may report next
    command_line: list[str] = []  # every word given (main sets it), for a mistyped required flag

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        self.parsed = parsed
        return parsed, extras


def chosen_command(parser: argparse.ArgumentParser, parsed) -> argparse.ArgumentParser:
    """The (sub)command parser `parsed` went down to: `data stats` for `mnist-ops data stats ...`."""
    while parsed is not None:
        choice = next((action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                       and getattr(parsed, action.dest, None) in action.choices), None)
        if choice is None:
            break
        parser = choice.choices[getattr(parsed, choice.dest)]
    return parser


def add_config_flags(parser: argparse.ArgumentParser, keys: tuple[str, ...] | None = None,
                     default: str | None = None, default_preset: str | None = None) -> None:
    """One flag per config key (`batch_size` -> `--batch-size`), generated from Config's fields:
    type, choices and help text come from config.py; a flag left out keeps the preset's value (quoted from
    `default_preset`, the command's own default, else the tool's), or what `default` says it keeps (each variant's in
    a study; a fixed value in a command without a preset)."""
    from dataclasses import fields

    from mnist_ops.config import CHOICES, Config
    from mnist_ops.presets import DEFAULT_PRESET, PRESETS

    shown = default_preset or DEFAULT_PRESET
    for field in fields(Config):
        if field.name == "preset" or (keys is not None and field.name not in keys):
            continue
        flag, help_text = "--" + field.name.replace("_", "-"), field.metadata["help"]
        preset_default = f"the preset's; {getattr(PRESETS[shown], field.name)!r} in {shown}"
        help_text += f" (default: {preset_default if default is None else default})"
        if field.type in ("bool", bool):
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}.get(field.type, field.type)
            parser.add_argument(flag, dest=field.name, type=kind, choices=CHOICES.get(field.name), help=help_text)


def config_overrides(args, keys: tuple[str, ...] | None = None) -> dict:
    """The config keys given as flags (None means not given)."""
    from dataclasses import fields

    from mnist_ops.config import Config

    return {field.name: getattr(args, field.name) for field in fields(Config)
            if field.name != "preset" and (keys is None or field.name in keys)
            and getattr(args, field.name, None) is not None}


BENCH_PRESET = "lean-8k"  # what `mnist-ops bench` measures unless told
BENCH_KEYS = ("model", "optimizer", "batch_size", "precision", "channels_last", "fast_dropout", "ema")
STUDY_KEYS = ("epochs", "limit_train", "tensorboard")  # for every variant of a study
LR_FIND_KEYS = ("model", "dataset", "batch_size", "limit_train")
PREVIEW_KEYS = ("augment", "interpolation", "rotation_fill")  # what `data preview` draws may differ from the preset's
DATA_ROOT_HELP = "data root (default: $MNIST_OPS_DATA, else ~/.cache/mnist-ops)"
MAX_LOADER_WORKERS = 32  # bench's DataLoader processes: 1,000 once ran out of memory after minutes, with a traceback


class VersionAction(argparse.Action):
    """`--version`: the package version and, in a git checkout, the commit (computed only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        import torch

        from mnist_ops.provenance import code_version

        print(f"mnist-ops {code_version()}, torch {torch.__version__}")
        parser.exit(0)


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser, ("dataset",), default="mnist")
    parser.set_defaults(dataset="mnist")
    parser.add_argument("--root", "--data-root", dest="root", default=None, help=DATA_ROOT_HELP)


def _add_storage_args(parser: argparse.ArgumentParser, out_help: str | None) -> None:
    """--storage, --study-name, --workers, --heartbeat (and --out, --data-root for tune)."""
    if out_help:
        parser.add_argument("--out", default=None, help=out_help)
        parser.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="Optuna storage shared by workers on several machines, e.g. "
                             "postgresql://user:password@host:5432/db (default: a SQLite file in the output directory)")
    parser.add_argument("--study-name", default=None, help="name of the study in the storage (default: the spec's name)")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes, one thread each (default 1)")
    parser.add_argument("--heartbeat", type=int, default=None, metavar="SECONDS",
                        help="worker heartbeat; a trial without one for twice the longest heartbeat of the commands "
                             "on the study is re-run elsewhere (default 30)")


def _add_measurement_parsers(commands, data_commands) -> None:
    """`study`, `lr-find` and `data preview`."""
    study = commands.add_parser("study", help="train a grid of variants x seeds, write a report",
                                description="mnist-ops study --spec FILE.toml | study regularization | "
                                            "study report DIR | study status DIR")
    study.add_argument("name", nargs="?", help="a built-in study (regularization), 'report' or 'status'")
    study.add_argument("directory", nargs="?", help="with 'report' or 'status': the study directory")
    study.add_argument("--spec", default=None, help="TOML file: [[variant]] tables (name, preset, config keys)")
    study.add_argument("--seeds", type=int, help="number of seeds (1..N), replacing the spec's")
    add_config_flags(study, STUDY_KEYS, default="each variant's")
    study.add_argument("--out", default=None, help="study directory (default: runs/study-<name>)")
    study.add_argument("--report-only", action="store_true", help="regenerate the report, train nothing")
    study.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    study.add_argument("--no-progress", action="store_true", help="no progress bars (epoch lines only)")
    _add_storage_args(study, None)

    tune = commands.add_parser("tune", help="recipe search on Optuna, scored on a validation split",
                               description="mnist-ops tune --spec FILE.toml: search config keys with Optuna; "
                                           "trials never read the test set")
    tune.add_argument("--spec", required=True, help="TOML file: preset, [base], [space.KEY] tables, [sampler], "
                                                    "[pruner], [objective] (docs/tune.md)")
    tune.add_argument("--trials", type=int, help="trials that end COMPLETE or PRUNED, over all workers "
                                                 "(default: the spec's)")
    tune.add_argument("--confirm", type=int, default=0, metavar="N",
                      help="then train the best config without the validation split for seeds 1..N and report "
                           "test accuracy (a study in DIR/confirm)")
    _add_storage_args(tune, "tune directory (default: runs/tune-<name>)")

    lr_find = commands.add_parser("lr-find", help="LR range test: loss vs exponentially rising lr")
    lr_find.add_argument("--preset", default=None, help="named recipe (default: seed-regularized)")
    lr_find.add_argument("--start-lr", type=float, default=1e-5, help="lr of the first batch (default 1e-05)")
    lr_find.add_argument("--end-lr", type=float, default=10.0, help="lr of the last batch (default 10)")
    lr_find.add_argument("--iterations", type=int, default=100, help="batches in the ramp (default 100)")
    add_config_flags(lr_find, LR_FIND_KEYS)
    lr_find.add_argument("--out", default=None,
                         help="directory for lr_find.png and .json (default: a new runs/lr-find-<preset>-<time>)")
    lr_find.add_argument("--force", action="store_true", help="overwrite an earlier range test in --out")
    lr_find.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    lr_find.add_argument("--no-progress", action="store_true", help="no progress bar")

    preview = data_commands.add_parser("preview", help="image (PNG, JPEG, SVG or PDF): training digits before and after augmentation")
    preview.add_argument("--preset", default=None, help="named recipe (default: seed-regularized)")
    preview.add_argument("--count", type=int, default=10, help="digits to show, 1 to 100 (default 10), 10 per row")
    add_config_flags(preview, ("seed",), default="0; it picks the digits shown and the augmentation's draws")
    preview.set_defaults(seed=0)
    preview.add_argument("--out", default=None, help="image path: .png, .jpg, .svg or .pdf "
                                                     "(default: runs/preview-<preset>.png, redrawn each time)")
    preview.add_argument("--force", action="store_true", help="overwrite an existing --out")
    add_config_flags(preview, PREVIEW_KEYS)
    _add_data_args(preview)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="mnist-ops", description="Train small CNNs on MNIST-format data and measure "
                                                          "what each choice buys.")
    parser.add_argument("--version", action=VersionAction, help="print the version (and git commit) and exit")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    data = commands.add_parser("data", help="fetch data, show statistics")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=ArgumentParser)
    _add_data_args(data_commands.add_parser("fetch", help="make the dataset files present and verified"))
    _add_data_args(data_commands.add_parser("stats", help="pixel mean/std of the train split, class counts"))

    summary = commands.add_parser("summary", help="layer table and receptive-field table of a model")
    which = summary.add_mutually_exclusive_group()
    add_config_flags(which, ("model",))
    which.add_argument("--preset", help="a preset name (its model)")
    add_config_flags(summary, ("dropout",))
    _add_data_args(summary)  # --dataset: the net as built for that data set's classes and image size

    commands.add_parser("list", help="list the registered models and presets")

    train = commands.add_parser("train", help="train a preset, write a run directory (or resume one)")
    train.add_argument("--preset", default=None, help="named recipe (default: seed-regularized; see `mnist-ops list`)")
    train.add_argument("--config", default=None, help="TOML file with config keys (flags override it)")
    train.add_argument("--resume", default=None, metavar="RUN_DIR",
                       help="continue a killed or interrupted run from its last.pt, with its config.toml")
    add_config_flags(train)
    train.add_argument("--out", default=None, help="run directory (default: runs/<preset>-seed<N>-<time>)")
    train.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    train.add_argument("--no-progress", action="store_true", help="no progress bars (epoch lines only)")

    evaluate = commands.add_parser("evaluate", help="test accuracy, per-class accuracy, confusion matrix")
    evaluate.add_argument("--checkpoint", required=True,
                          help="a run directory (its best.pt, else last.pt) or a checkpoint file")
    evaluate.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    add_config_flags(evaluate, ("device",), default="auto")
    evaluate.set_defaults(device="auto")
    evaluate.add_argument("--json", action="store_true",
                          help="print the results as one JSON object on stdout (messages go to stderr)")

    bench = commands.add_parser("bench", help="img/s: per-sample DataLoader pipeline vs ours, side by side")
    bench.add_argument("--preset", default=BENCH_PRESET, help=f"named recipe to measure (default: {BENCH_PRESET})")
    bench.add_argument("--batches", type=int, default=60, help="batches per measurement (default 60)")
    bench.add_argument("--repeats", type=int, default=3, help="repeats per measurement (default 3)")
    bench.add_argument("--workers", type=int, default=2, help="DataLoader workers for the per-sample side (default 2)")
    add_config_flags(bench, BENCH_KEYS, default_preset=BENCH_PRESET)
    bench.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    bench.add_argument("--json", default=None, help="also write the numbers to this new JSON file (never overwritten)")
    _add_measurement_parsers(commands, data_commands)
    _add_use_parsers(commands)
    return parser


def _add_use_parsers(commands) -> None:
    """`predict`, `export` and `serve`: use a trained model."""
    def add_model_args(parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--checkpoint", help="a run directory (its best.pt, else last.pt) or a checkpoint file, "
                                                "run by PyTorch")
        which.add_argument("--model", help="a model.onnx written by `mnist-ops export`, run by onnxruntime")

    predict = commands.add_parser("predict", help="the digit in each image file (PNG/JPEG/BMP/GIF/WebP, a folder, IDX)",
                                  description="Prints each image's digit, its probability and the top 3.")
    add_model_args(predict)
    predict.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="image files, folders of them, IDX files")
    predict.add_argument("--json", action="store_true", help="one JSON object per line")

    export = commands.add_parser("export", help="write the model as ONNX (BatchNorm folded, dynamic batch)")
    export.add_argument("--checkpoint", required=True, help="a run directory (its best.pt, else last.pt) or a "
                                                            "checkpoint file")
    export.add_argument("--out", default="model.onnx", help="the .onnx file to write (default: model.onnx)")
    export.add_argument("--force", action="store_true", help="overwrite an existing --out")

    serve = commands.add_parser("serve", help="a draw-a-digit page and a JSON /predict endpoint (FastAPI)")
    add_model_args(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")


def command_data(args) -> None:
    from mnist_ops import data

    if args.data_command == "preview":
        command_data_preview(args)
        return
    if args.data_command == "fetch":
        directory = data.fetch(args.dataset, args.root)
        print(f"{args.dataset}: all files present and verified in {directory}")
        return
    train = data.load_split(args.dataset, "train", args.root)
    test = data.load_split(args.dataset, "test", args.root)
    mean, std = data.train_pixel_stats(args.dataset, train.images, args.root)
    classes = data.dataset_info(args.dataset).classes
    print(f"{args.dataset}: {len(train):,} train / {len(test):,} test images, {tuple(train.images.shape[1:])} pixels")
    print(f"train pixel mean {mean:.4f}  std {std:.4f}")
    print("class    train    test")
    counts = (data.class_counts(split.labels, len(classes)) for split in (train, test))
    for index, (a, b) in enumerate(zip(*counts)):
        named = classes[index] != str(index)  # a name of its own, however short ("a"), is shown
        print(f"{index} {classes[index]:<12} {a:>6} {b:>7}" if named else f"{index:<6} {a:>7} {b:>7}")


def command_summary(args) -> None:
    from mnist_ops.analysis import format_receptive_field, model_summary, receptive_field
    from mnist_ops.engine import build_model
    from mnist_ops.presets import build_config

    config = build_config(args.preset, None, {**config_overrides(args, ("model", "dropout")), "dataset": args.dataset})
    classes, size = 10, (28, 28)  # the registered data sets' images are all 28 x 28
    if args.dataset != "mnist":
        from mnist_ops.data import dataset_info
        from mnist_ops.idx import read_idx_shape

        info = dataset_info(config.dataset)
        classes = len(info.classes)
        if info.directory is not None:  # a directory of one's own: the size from its train images' header
            shape = read_idx_shape(info.directory / info.split_files("train")[0])[1:]
            size = shape[::-1] if info.transposed else shape
    model = build_model(config, classes, size, log=print)
    name = config.model
    print(f"model {name}")
    print(model_summary(model, (1, 1, *size)))
    print("Receptive field")
    print(format_receptive_field(receptive_field(model, size)))


def command_list(args) -> None:
    from mnist_ops.models import count_parameters, create_model, entry_point_models, list_models
    from mnist_ops.presets import PRESETS

    print("models:")
    for name in list_models():
        print(f"  {name:<24} {count_parameters(create_model(name)):>9,} parameters")
    for name, entry in sorted(entry_point_models().items()):  # listed, not imported
        package = f"{entry.dist.name} {entry.dist.version}" if entry.dist else "an installed package"
        shadowed = " (shadowed by the built-in model)" if name in list_models() else ""
        print(f"  {name:<24} from {package} ({entry.value}){shadowed}")
    print("  or your own: --model path/to/nets.py:Net or --model package.module:build")
    print("presets:")
    for name, preset in sorted(PRESETS.items()):
        speed = [preset.precision] + ["channels_last"] * preset.channels_last + \
            [f"{preset.replicas} replicas"] * (preset.replicas > 1)
        plain = "plain last epoch" if preset.plain_epochs == 1 else f"plain last {preset.plain_epochs} epochs"
        extras = [f"{preset.cycles} cycles"] * (preset.cycles > 1) + [plain] * (preset.plain_epochs > 0) + \
            [f"training crops {preset.train_crop}x{preset.train_crop}"] * (preset.train_crop > 0) + \
            [f"ema {preset.ema}"] * (preset.ema > 0) + [f"SAM rho {preset.sam}"] * (preset.sam > 0) + \
            [f"precise BN over {preset.precise_bn:,}"] * (preset.precise_bn > 0)
        print(f"  {name:<24} model {preset.model}, {preset.epochs} epochs, batch {preset.batch_size}, "
              f"{preset.optimizer} lr {preset.lr}, {preset.schedule}, augment {preset.augment}, "
              f"{', '.join(extras + speed)}")


def train_config(args):
    """The `train` command's config: preset, then --config FILE, then flags. With --resume, the
    run's own config.toml is the file, and a flag that changes it is refused by `fit`."""
    from mnist_ops.data import check_recorded_dataset
    from mnist_ops.fileio import read_toml
    from mnist_ops.presets import build_config

    if args.resume:
        if args.config:
            raise UserError("--resume takes the run's own config.toml; drop --config")
        run = Path(args.resume)
        if run.is_file():
            hint = "; pass the directory it is in" if run.suffix == ".pt" else ""
            raise UserError(f"--resume takes a run directory, and {run} is a file{hint}")
        if not run.exists():
            raise UserError(f"{run}: no such run directory; pass the --out of the run to go on with")
        config_file = run / "config.toml"
        if not config_file.is_file():
            raise UserError(f"{args.resume} holds no config.toml: no run started there (or it was stopped while "
                            f"starting); start it with `mnist-ops train --out {args.resume}` and your flags")
        recorded = read_toml(config_file)
        if args.preset and args.preset != recorded.get("preset"):
            of = f", of preset {recorded['preset']!r}" if recorded.get("preset") else ""
            raise UserError(f"--resume takes the run's own config.toml{of}; drop --preset {args.preset}")
        check_recorded_dataset(str(recorded.get("dataset", "mnist")), run)
        # a whole run's record: a key Config gained since takes the default the run had (build_config)
        return build_config(None, str(config_file), config_overrides(args))
    return build_config(args.preset, args.config, config_overrides(args))


def new_directory(path: Path) -> Path:
    """Create `path`, or `path-2`, `path-3`, ... if it exists: the first name no other process took."""
    check_destination(path, directory=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    for number in range(1, 1000):
        candidate = path if number == 1 else path.with_name(f"{path.name}-{number}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise UserError(f"{path} and 998 more names like it exist; pass --out")


def command_train(args) -> None:
    from mnist_ops.train import fit

    config = train_config(args)
    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise UserError("--resume continues the run in its own directory; drop --out")
    out = args.resume or args.out
    existed = out is not None and Path(out).exists()  # a directory of the user's own is never removed below
    made = out is None  # by the mkdir below, which no other process can share; an --out that is not there yet may be
    if made:  # a new directory of its own, even beside a run started in the same second (an lr sweep)
        out = new_directory(Path("runs") / f"{config.preset}-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    check_destination(out, directory=True)
    try:
        try:  # made before fit looks: fit takes it away again as one it made itself if the run never starts
            fit(config, out, data_root=args.data_root, progress=not args.no_progress, resume=bool(args.resume),
                made_for_it=made)
        except BaseException:
            if not existed:  # made for this run (here or by fit): gone again if it stayed empty (missing data...)
                with contextlib.suppress(OSError):
                    Path(out).rmdir()
            raise
    except KeyboardInterrupt as error:
        if (Path(out) / "config.toml").is_file():
            print(f"mnist-ops: interrupted; continue with `mnist-ops train --resume {out}`", file=sys.stderr)
        else:  # stopped while starting: there is no run to resume yet (its empty directory went above)
            print("mnist-ops: interrupted before the run started; run the same command again", file=sys.stderr)
        raise SystemExit(interrupted_code(error)) from None


def command_evaluate(args) -> None:
    import json

    from mnist_ops.analysis import confusion_matrix, format_confusion, per_class_accuracy
    from mnist_ops.data import check_recorded_dataset, dataset_info, load_split
    from mnist_ops.engine import evaluate_checkpoint, find_checkpoint, load_checkpoint, resolve_device, trained_on

    say = (lambda message: print(message, file=sys.stderr)) if args.json else print  # stdout: only the JSON
    path = find_checkpoint(args.checkpoint, log=say)
    checkpoint = load_checkpoint(path)
    dataset = checkpoint["config"].get("dataset", "mnist")
    check_recorded_dataset(dataset, path.parent)
    trained_on(checkpoint, path)  # refuses a damaged record of classes or image size
    device = resolve_device(args.device)
    test = load_split(dataset, "test", args.data_root)
    result = evaluate_checkpoint(checkpoint, test.images, test.labels, device)  # refuses a changed class count
    classes = dataset_info(dataset).classes
    matrix = confusion_matrix(test.labels, result.predictions, len(classes))
    per_class = per_class_accuracy(matrix)
    if args.json:
        print(json.dumps({
            "checkpoint": str(path), "model": checkpoint["model_name"], "epoch": checkpoint["epoch"],
            "dataset": dataset, "test_accuracy": round(result.accuracy, 2), "test_loss": round(result.loss, 4),
            "correct": int(matrix.diagonal().sum()), "images": len(test),
            "per_class_accuracy": {name: None if value is None else round(value, 2)  # null: no test images
                                   for name, value in zip(classes, per_class)},
            "confusion_matrix": matrix.tolist()}, indent=2))
        return
    print(f"checkpoint {path}: model {checkpoint['model_name']}, epoch {checkpoint['epoch']}")
    print(f"test accuracy {result.accuracy:.2f}%  loss {result.loss:.4f}  "
          f"({int(matrix.diagonal().sum())}/{len(test)} correct)")
    print("per-class accuracy: " + "  ".join(f"{c}: {'n/a (no test images)' if a is None else f'{a:.2f}%'}"
                                             for c, a in zip(classes, per_class)))
    print("confusion matrix (rows: true, columns: predicted)")
    print(format_confusion(matrix, classes))


def command_bench(args) -> None:
    from mnist_ops.bench import run_bench
    from mnist_ops.presets import build_config
    from mnist_ops.provenance import refuse_existing, write_results

    if args.batches < 2 or args.repeats < 1 or not 0 <= args.workers <= MAX_LOADER_WORKERS:
        raise UserError(f"--batches must be >= 2, --repeats >= 1 and --workers between 0 and {MAX_LOADER_WORKERS}")
    if args.json:
        refuse_existing(args.json)  # before minutes of measuring
    config = build_config(args.preset, None, config_overrides(args, BENCH_KEYS))
    results = run_bench(config, args.batches, args.repeats, args.workers, data_root=args.data_root)
    if args.json:
        print(f"wrote {write_results(args.json, results)}")


def refuse_to_overwrite(out: str | None, force: bool) -> None:
    """A file --out names is written over only with --force; a directory is named as one."""
    if out is None:
        return
    if Path(out).is_dir():
        raise UserError(f"--out {out} is a directory; name the file to write in it")
    if Path(out).exists() and not force:
        raise UserError(f"{out} already exists; pass another --out, or --force to overwrite it")


def command_data_preview(args) -> None:
    from mnist_ops.presets import build_config
    from mnist_ops.report import plot_augmentation_preview

    overrides = config_overrides(args, PREVIEW_KEYS)
    config = build_config(args.preset, None, {"dataset": args.dataset, "seed": args.seed, **overrides})  # checks --seed
    out = check_destination(args.out or Path("runs") / ("-".join(["preview", config.preset, *overrides.values()])
                                                        + ".png"))
    refuse_to_overwrite(args.out, args.force)  # a path the user named; the default one is the tool's, redrawn
    plot_augmentation_preview(config, args.count, config.seed, out, data_root=args.root)
    print(f"wrote {out}: {args.count} training digits, each row before and the row below it after "
          f"augment '{config.augment}' ({config.interpolation}, rotation fill {config.rotation_fill})")


def study_command_line(args) -> str:
    """The invocation, rebuilt from the parsed arguments, for the report."""
    words = ["mnist-ops", "study"] + [word for word in (args.name, args.directory) if word]
    for flag, value in (("--spec", args.spec), ("--seeds", args.seeds), ("--epochs", args.epochs),
                        ("--limit-train", args.limit_train), ("--out", args.out), ("--data-root", args.data_root),
                        ("--storage", args.storage and "URL"), ("--study-name", args.study_name),
                        ("--workers", args.workers if args.workers != 1 else None)):
        if value is not None:
            words += [flag, str(value)]
    return " ".join(words)


def study_spec_from_args(args):
    from mnist_ops.study import built_in_spec, read_spec

    if args.spec and args.name:
        raise UserError(f"give either a built-in study name or --spec FILE.toml, not both (got '{args.name}')")
    if not args.spec and not args.name:
        raise UserError("name a built-in study (regularization), pass --spec FILE.toml, or `study report DIR`")
    if args.directory:
        raise UserError(f"unexpected argument '{args.directory}'; pass the study directory with --out")
    overrides = config_overrides(args, STUDY_KEYS)
    if args.spec:
        return read_spec(args.spec, args.seeds, overrides)
    return built_in_spec(args.name, args.seeds, overrides)


def check_worker_args(args) -> None:
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1 (local worker processes), got {args.workers}")
    if args.heartbeat is not None and args.heartbeat < 1:
        raise UserError(f"--heartbeat must be >= 1 second, got {args.heartbeat}")


def run_study_command(spec, out: Path, storage: str | None, study_name: str | None, workers: int,
                      heartbeat: int | None, data_root, command: str, progress: bool) -> None:
    """Train a study: one run after another in this process (no --storage, one worker), or on an Optuna
    storage shared by --workers local processes and any other machine running the same command."""
    from mnist_ops.distributed import EMBEDDED_FILE, storage_url
    from mnist_ops.study import run_study

    workers = max(1, min(workers, len(spec.variants) * len(spec.seeds)))  # no more workers than runs
    # a directory whose study runs on its embedded storage is joined, never trained beside it
    if storage is None and workers == 1 and not (out / EMBEDDED_FILE).is_file():
        run_study(spec, out, data_root=data_root, command=command, progress=progress)
        return
    from mnist_ops.study_storage import run_shared_study

    run_shared_study(spec, out, storage_url(storage, out), study_name or spec.name, workers, heartbeat, data_root,
                     command, progress)


def study_status(args) -> str:
    """`study status DIR`: each run's state, from the storage (--storage, or DIR's embedded file) or DIR."""
    from mnist_ops.distributed import EMBEDDED_FILE, embedded_url, storage_url
    from mnist_ops.study import SPEC_FILE, directory_status, format_status, read_recorded_spec

    directory = Path(args.directory)
    if args.storage or (directory / EMBEDDED_FILE).is_file():
        from mnist_ops.study_storage import only_study_name, storage_status

        url = storage_url(args.storage, directory, read_only=True) if args.storage else embedded_url(directory)
        name = args.study_name or only_study_name(url)
        return format_status(name, storage_status(url, name, args.heartbeat))
    if not (directory / SPEC_FILE).is_file():
        raise UserError(f"{directory} holds no {SPEC_FILE} and no {EMBEDDED_FILE}: not a study directory; pass the "
                        "study's --out, or --storage URL for a study on a server")
    spec = read_recorded_spec(directory / SPEC_FILE)
    return format_status(spec.name, directory_status(spec, directory))


def command_study(args) -> None:
    from mnist_ops.study_report import write_report

    if args.name in ("report", "status"):
        if not args.directory:
            raise UserError(f"`study {args.name}` needs the study directory: mnist-ops study {args.name} DIR")
        ignored = [flag for flag, value in (("--spec", args.spec), ("--seeds", args.seeds), ("--epochs", args.epochs),
                                            ("--limit-train", args.limit_train), ("--out", args.out))
                   if value is not None] + (["--report-only"] if args.report_only else [])
        if ignored:
            what = "rebuilds the report from the finished runs" if args.name == "report" else "shows each run's state"
            raise UserError(f"`study {args.name} DIR` {what} and takes no {', '.join(ignored)}; drop it, or train "
                            "with `mnist-ops study --spec FILE`")
        if args.name == "status":
            print(study_status(args))
            return
        if args.storage:
            from mnist_ops.distributed import storage_url
            from mnist_ops.study_storage import export_study, only_study_name

            url = storage_url(args.storage, args.directory, read_only=True)
            export_study(url, args.study_name or only_study_name(url), args.directory)
        print(f"wrote {write_report(args.directory, data_root=args.data_root)}")
        return
    check_worker_args(args)
    spec = study_spec_from_args(args)
    out = check_destination(args.out or Path("runs") / f"study-{spec.name}", directory=True)
    if not args.report_only:
        run_study_command(spec, out, args.storage, args.study_name, args.workers, args.heartbeat, args.data_root,
                          study_command_line(args), progress=not args.no_progress)
    print(f"wrote {write_report(out, data_root=args.data_root)}")


def command_lr_find(args) -> None:
    from mnist_ops.lr_find import lr_find
    from mnist_ops.presets import build_config

    config = build_config(args.preset, None, config_overrides(args, LR_FIND_KEYS))
    out = check_destination(args.out or Path("runs") / f"lr-find-{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}",
                            directory=True)  # before the range test, not after it
    lr_find(config, args.start_lr, args.end_lr, args.iterations, out, data_root=args.data_root,
            progress=not args.no_progress, force=args.force)


@contextlib.contextmanager
def checkpoint_in_use(path: str | None):
    """--checkpoint for predict/export/serve: a run directory means its best.pt, else its last.pt. Which one is
    said on stderr (so `predict --json` keeps stdout to JSON lines) when the block loading it ends without an
    error: an error stays one line."""
    from mnist_ops.engine import find_checkpoint

    notes: list[str] = []
    yield None if path is None else str(find_checkpoint(path, log=notes.append))
    for note in notes:
        print(note, file=sys.stderr)


def command_predict(args) -> int:
    import json

    from mnist_ops.predict import expand_inputs, load_predictor, read_images

    # a missing input is named before a model is loaded; what a folder holds besides images, on stderr
    files = expand_inputs(args.inputs, log=lambda message: print(f"mnist-ops: note: {message}", file=sys.stderr))
    with checkpoint_in_use(args.checkpoint) as checkpoint:
        predictor = load_predictor(checkpoint, args.model)
    failed, repeats = 0, {}  # (IDX file, message) -> images after the first with that message
    for name, result in predictor.predict_many(read_images(files)):
        if isinstance(result, UserError):
            failed += 1
            file, _, index = name.rpartition("[")  # "FILE[i]": an image inside an IDX file
            key = (file, str(result).removeprefix(name)) if file and index.endswith("]") else None
            if key in repeats:  # the same error for every image of a file: said once, then counted
                repeats[key] += 1
                continue
            if key is not None:
                repeats[key] = 0
            print(f"mnist-ops: error: {result}", file=sys.stderr)
        elif args.json:
            print(json.dumps({"file": name, **result.to_dict(), "label": predictor.labels[result.digit]}))
        else:
            top = ", ".join(f"{predictor.labels[digit]} {p:.1%}" for digit, p in result.top(3))
            print(f"{name}: {predictor.labels[result.digit]} ({result.probability:.1%})  top 3: {top}")
    for (file, _), count in repeats.items():
        if count:
            print(f"mnist-ops: error: {file}: the same for {count:,} more of its images", file=sys.stderr)
    return 2 if failed else 0  # the good images are printed; each bad one (or file) got its own line on stderr


def command_export(args) -> None:
    from mnist_ops.export import export_onnx

    check_destination(args.out)
    refuse_to_overwrite(args.out, args.force)  # an earlier export is not lost to the default --out
    with checkpoint_in_use(args.checkpoint) as checkpoint:
        metadata = export_onnx(checkpoint, args.out)
    try_it = (f"`mnist-ops predict --model {args.out} FILE` or `mnist-ops serve --model {args.out}`"
              if metadata["dataset"] == "mnist" else f"`mnist-ops predict --model {args.out} FILE-idx3-ubyte`")
    print(f"wrote {args.out}: model {metadata['model_name']}, epoch {metadata['epoch']}, dynamic batch; "
          f"try {try_it}", flush=True)


def command_serve(args) -> None:
    from mnist_ops.errors import require_extra

    require_extra("serve", "fastapi", "uvicorn", "python_multipart")
    from mnist_ops.predict import load_predictor
    from mnist_ops.serve.app import listen, run

    sock = listen(args.host, args.port)  # a port in use is named before the model is loaded
    try:
        with checkpoint_in_use(args.checkpoint) as checkpoint:
            predictor = load_predictor(checkpoint, args.model)
        if not predictor.digits:  # the page and /predict take pictures, which only a digit model can read
            raise UserError(f"model {predictor.model_name} was trained on {predictor.dataset}, not on MNIST's "
                            "handwritten digits, and serve reads pictures of digits; run it on its data set's IDX "
                            "files with `mnist-ops predict`")
    except BaseException:
        sock.close()
        raise
    run(predictor, sock)


def tune_command_line(args) -> str:
    words = ["mnist-ops", "tune", "--spec", args.spec]
    for flag, value in (("--trials", args.trials), ("--confirm", args.confirm or None), ("--out", args.out),
                        ("--storage", args.storage and "URL"), ("--study-name", args.study_name),
                        ("--workers", args.workers if args.workers != 1 else None)):
        if value is not None:
            words += [flag, str(value)]
    return " ".join(words)


def command_tune(args) -> None:
    from mnist_ops.tune import read_tune_spec, run_tune
    from mnist_ops.tune_report import write_tune_report

    check_worker_args(args)
    if args.confirm < 0:
        raise UserError(f"--confirm must be >= 0 (seeds to train the best config on), got {args.confirm}")
    spec = read_tune_spec(args.spec, args.trials)
    out = check_destination(args.out or Path("runs") / f"tune-{spec.name}", directory=True)
    command = tune_command_line(args)
    run_tune(spec, out, storage=args.storage, study_name=args.study_name, workers=args.workers,
             data_root=args.data_root, heartbeat=args.heartbeat, command=command)
    if args.confirm:
        from mnist_ops.tune import confirm_spec, stale_confirm

        changed = stale_confirm(out, spec)
        if changed:  # the search went on after an earlier --confirm: grown, that study would refuse the new recipe
            raise UserError(f"{out / 'confirm'} tested an earlier best.toml ({changed} since); delete {out / 'confirm'} "
                            f"and run this command again to confirm the new best on the test set")
        confirm = confirm_spec(out, spec, args.confirm)
        run_study_command(confirm, out / "confirm", args.storage, f"{args.study_name or spec.name}-confirm",
                          args.workers, args.heartbeat, args.data_root, command, progress=False)
        from mnist_ops.study_report import write_report

        print(f"wrote {write_report(out / 'confirm', data_root=args.data_root)}")  # the tune report links it
    print(f"wrote {write_tune_report(out, spec, args.storage, args.study_name, command)}")


COMMANDS = {"data": command_data, "summary": command_summary, "list": command_list,
            "train": command_train, "evaluate": command_evaluate,
            "bench": command_bench,
            "study": command_study, "tune": command_tune, "lr-find": command_lr_find,
            "predict": command_predict, "export": command_export, "serve": command_serve}



def option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> its flag (`resume` -> `--resume`), over the parser and its commands."""
    names = {}
    for action in parser._actions:
        if action.option_strings:
            names.setdefault(action.dest, max(action.option_strings, key=len))
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                names.update(option_names(command))
    return names


def refuse_empty_values(parser: argparse.ArgumentParser, args) -> None:
    """An empty string is no value: `--resume ''` would start a new run, `--config ''` drop the file, `--preset ''`
    train the default preset, and an empty path means the current directory. A config key whose default is empty
    (`--teacher ''`: none, over a teacher a config file names) keeps it."""
    from dataclasses import fields

    from mnist_ops.config import Config

    empty_means_none = {field.name for field in fields(Config) if field.default == ""}
    for dest, value in vars(args).items():
        if dest not in empty_means_none and (value == "" or (isinstance(value, list) and "" in value)):
            name = option_names(parser).get(dest, dest.replace("_", " "))
            chosen_command(parser, args).error(f"{name} is empty; give it a value, or leave it out")


def main(argv: list[str] | None = None) -> int:
    import signal

    parser = build_parser()
    ArgumentParser.command_line = list(sys.argv[1:] if argv is None else argv)
    args, extras = parser.parse_known_args(argv)
    if extras and args.command == "predict" and not any(word.startswith("-") for word in extras):
        args.inputs += extras  # files after a flag too (predict a.png --json b.png): argparse takes one run of them
    elif (extras and args.command == "study" and args.name and args.directory is None and len(extras) == 1
          and not extras[0].startswith("-")):
        args.directory = extras[0]  # `study report --data-root R DIR`: argparse fills both positionals before a flag
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")  # as parse_args says it
    refuse_empty_values(parser, args)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # epoch lines reach a pipe (a log, a watching script) as printed
    try:
        if not (args.command == "study" and args.name in ("report", "status")):  # those two read files, not torch
            import_torch_whole()
        code = COMMANDS[args.command](args)
    except UserError as error:  # TrainingDiverged (exit 3) is one too
        print(f"mnist-ops: error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # `mnist-ops summary | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:  # the environment refused a path: permissions, a file where a folder should be, a full disk
        where = f"{error.filename}: " if error.filename else ""
        print(f"mnist-ops: error: {where}{error.strerror or error}; check the path, its permissions and free space",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:
        print("mnist-ops: interrupted", file=sys.stderr)
        return interrupted_code(error)
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
