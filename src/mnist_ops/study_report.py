"""The study report: tables, figures, interval comparisons and observations, from finished runs.

The report is built once as a list of blocks (headings, paragraphs, tables, images) and
rendered twice, as `report.md` and `index.html`, so both always show the same numbers.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_ops.errors import UserError
from mnist_ops.fileio import atomic_write_bytes
from mnist_ops.study import DONE_FILE, SPEC_FILE, STUDY_FILE, Spec, read_spec, run_dir

THRESHOLDS = (99.0, 99.4)  # "epochs to reach" columns
CHANCE_CEILING = 20.0  # percent: a variant ending at or below this did not learn (guessing gives 10%)
GALLERY_SIZE = 40


# ---------------------------------------------------------------------------- statistics

def student_t_quantile(probability: float, degrees_of_freedom: float) -> float:
    """Quantile of Student's t (probability > 0.5), by bisection on its numerically integrated CDF."""
    nu = degrees_of_freedom
    log_scale = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 20_001)
        density = np.exp(log_scale - (nu + 1) / 2 * np.log1p(grid ** 2 / nu))
        return 0.5 + float(np.trapezoid(density, grid))

    low, high = 0.0, 1.0
    while cdf(high) < probability:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < probability else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Interval:
    difference: float  # mean(second) - mean(first)
    low: float
    high: float
    degrees_of_freedom: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def welch_interval(first: list[float], second: list[float], confidence: float = 0.95) -> Interval | None:
    """Welch's t interval for mean(second) - mean(first); None with fewer than 2 values in a group."""
    if len(first) < 2 or len(second) < 2:
        return None
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    difference = float(b.mean() - a.mean())
    variance_a, variance_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    standard_error = math.sqrt(variance_a + variance_b)
    if standard_error == 0:
        return Interval(difference, difference, difference, math.inf)
    degrees = (variance_a + variance_b) ** 2 / (variance_a ** 2 / (len(a) - 1) + variance_b ** 2 / (len(b) - 1))
    margin = student_t_quantile(0.5 + confidence / 2, degrees) * standard_error
    return Interval(difference, difference - margin, difference + margin, degrees)


def epochs_to_reach(records: list[dict], threshold: float) -> int | None:
    """Number of epochs trained when test accuracy first reached the threshold, or None."""
    for record in records:
        if record["test_accuracy"] >= threshold:
            return record["epoch"] + 1
    return None


def held_target(records: list[dict], target: float, last_k: int) -> bool:
    return all(record["test_accuracy"] >= target for record in records[-last_k:])


# ---------------------------------------------------------------------------- loading

@dataclass(frozen=True)
class Run:
    seed: int
    records: list[dict]
    summary: dict
    directory: Path

    @property
    def last(self) -> dict:
        return self.records[-1]


@dataclass(frozen=True)
class VariantResult:
    name: str
    config: dict
    runs: list[Run]

    def final(self, key: str) -> list[float]:
        """The key's value in the last epoch of each run."""
        return [run.last[key] for run in self.runs]

    def last_test(self) -> list[float]:
        return self.final("test_accuracy")

    def accuracy_gap(self) -> list[float]:
        return [run.last["train_accuracy"] - run.last["test_accuracy"] for run in self.runs]

    def loss_gap(self) -> list[float]:
        return [run.last["test_loss"] - run.last["train_loss"] for run in self.runs]


def _load_run(directory: Path) -> Run:
    done = json.loads((directory / DONE_FILE).read_text())
    lines = (directory / "metrics.jsonl").read_text().splitlines()
    return Run(done["seed"], [json.loads(line) for line in lines], done["summary"], directory)


def load_study(study_dir: str | os.PathLike) -> tuple[Spec, list[VariantResult], dict]:
    """The spec, each variant's finished runs (variants without any are left out), study.json."""
    study_dir = Path(study_dir)
    if not (study_dir / SPEC_FILE).is_file():
        raise UserError(f"{study_dir} holds no {SPEC_FILE}: not a study directory; run `mnist-ops study` first")
    spec = read_spec(study_dir / SPEC_FILE)
    results = []
    for variant in spec.variants:
        directories = [run_dir(study_dir, variant.name, seed) for seed in spec.seeds]
        runs = [_load_run(directory) for directory in directories if (directory / DONE_FILE).is_file()]
        if runs:
            results.append(VariantResult(variant.name, variant.config.to_dict(), runs))
    if not results:
        raise UserError(f"{study_dir} has no finished runs yet; run the study first")
    info_path = study_dir / STUDY_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return spec, results, info


# ---------------------------------------------------------------------------- formatting

def percent(value: float) -> str:
    return f"{value:.2f}"


def signed(value: float, digits: int = 2) -> str:
    """'+0.52', '-0.02'; a value that rounds to zero prints as '+0.00', never '-0.00'."""
    return f"{value + 0.0 if round(value, digits) else 0.0:+.{digits}f}"


def mean_std_min(values: list[float]) -> str:
    if len(values) == 1:
        return f"{percent(values[0])} (1 seed)"
    return f"{percent(float(np.mean(values)))} ± {percent(float(np.std(values, ddof=1)))} (min {percent(min(values))})"


def describe_epochs_to_reach(runs: list[Run], threshold: float) -> str:
    reached = [epochs_to_reach(run.records, threshold) for run in runs]
    epochs = [value for value in reached if value is not None]
    if not epochs:
        return "never"
    text = f"{np.mean(epochs):.1f}"
    missed = len(reached) - len(epochs)
    return text if missed == 0 else f"{text} ({missed} of {len(reached)} never)"


def describe_interval(interval: Interval | None) -> str:
    if interval is None:
        return "n/a (needs >= 2 seeds per variant)"
    return f"{signed(interval.low)} to {signed(interval.high)}"


def verdict(interval: Interval | None) -> str:
    if interval is None:
        return "cannot tell"
    return "distinguishable from noise" if interval.excludes_zero else "not distinguishable from noise"


# ---------------------------------------------------------------------------- figures

def _epoch_matrix(variant: VariantResult, value) -> tuple[np.ndarray, np.ndarray]:
    """Epoch numbers and a [runs, epochs] array of value(record), over the epochs every run has."""
    length = min(len(run.records) for run in variant.runs)
    values = np.array([[value(record) for record in run.records[:length]] for run in variant.runs])
    return np.arange(1, length + 1), values


def plot_band(variants: list[VariantResult], value, path: Path, title: str, ylabel: str) -> None:
    """One line per variant (mean over seeds) with a min-max band over seeds."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from mnist_ops.report import save_figure

    figure = Figure(figsize=(8, 4.5))
    axes = figure.subplots()
    for variant in variants:
        epochs, values = _epoch_matrix(variant, value)
        line, = axes.plot(epochs, values.mean(axis=0), "o-", markersize=3, label=variant.name)
        axes.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
    axes.set(xlabel="epoch", ylabel=ylabel, title=title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    save_figure(figure, path)


def _test_accuracy(record: dict) -> float:
    return record["test_accuracy"]


def _accuracy_gap(record: dict) -> float:
    return record["train_accuracy"] - record["test_accuracy"]


@dataclass(frozen=True)
class BestVariantAnalysis:
    variant: str
    seed: int
    accuracy: float
    per_class: list[float]
    test_images: int


def analyse_best_run(run: Run, variant: str, study_dir: Path, data_root) -> BestVariantAnalysis:
    """Evaluate the run's last.pt on the test set; draw its confusion matrix and misclassified digits."""
    from mnist_ops.analysis import confusion_matrix, per_class_accuracy
    from mnist_ops.data import dataset_info, load_split
    from mnist_ops.report import plot_confusion_matrix, plot_digit_gallery
    from mnist_ops.batches import normalize
    from mnist_ops.engine import evaluate, load_checkpoint, model_from_checkpoint, resolve_device

    checkpoint = load_checkpoint(run.directory / "last.pt")
    dataset = checkpoint["config"].get("dataset", "mnist")
    test = load_split(dataset, "test", data_root)
    device = resolve_device("cpu")
    model = model_from_checkpoint(checkpoint).to(device)
    result = evaluate(model, normalize(test.images, checkpoint["mean"], checkpoint["std"]), test.labels, device)
    classes = dataset_info(dataset).classes
    matrix = confusion_matrix(test.labels, result.predictions, len(classes))
    title = f"{variant}, seed {run.seed}: test accuracy {percent(result.accuracy)}%"
    plot_confusion_matrix(matrix, classes, study_dir / "confusion.png", title=title)
    wrong = (result.predictions != test.labels).nonzero().flatten()[:GALLERY_SIZE]
    captions = [f"true {int(test.labels[i])}, pred {int(result.predictions[i])}" for i in wrong]
    plot_digit_gallery(test.images[wrong], captions, study_dir / "misclassified.png",
                       title=f"First {len(wrong)} misclassified test digits ({variant}, seed {run.seed})")
    return BestVariantAnalysis(variant, run.seed, result.accuracy, per_class_accuracy(matrix), len(test))


# ---------------------------------------------------------------------------- the report

@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    file: str
    caption: str


# ("heading", str) | ("paragraph", str) | ("list", list[str]) | ("table", Table) | ("image", Image)
Block = tuple[str, object]


def effective_dropout(config: dict) -> str:
    """The dropout the model really applies: some models ignore the config's dropout."""
    from torch import nn

    from mnist_ops.models import create_model

    model = create_model(config["model"], defaults={"dropout": config["dropout"]})
    rates = sorted({module.p for module in model.modules() if isinstance(module, nn.Dropout) and module.p > 0})
    return ", ".join(f"{rate:g}" for rate in rates) or "none"


def accuracy_table(variants: list[VariantResult], spec: Spec) -> Table:
    header = ["Variant", "Model", "Parameters", "Augment", "Dropout", "Best test % (mean ± std, min)",
              "Last test % (mean ± std, min)", "Last train % (mean ± std, min)", "Seeds"]
    rows = []
    for variant in variants:
        best = [run.summary["best_test_accuracy"] for run in variant.runs]
        rows.append([variant.name, variant.config["model"], f"{variant.runs[0].summary['parameters']:,}",
                     variant.config["augment"], effective_dropout(variant.config), mean_std_min(best),
                     mean_std_min(variant.last_test()), mean_std_min(variant.final("train_accuracy")),
                     f"{len(variant.runs)} of {len(spec.seeds)}"])
    return Table(header, rows)


def generalization_table(variants: list[VariantResult], spec: Spec) -> Table:
    header = ["Variant", "Gap at end: train − test acc (pp)", "Gap at end: test − train loss",
              *[f"Epochs to {threshold}%" for threshold in THRESHOLDS],
              f"Held ≥ {spec.target_accuracy}% in each of the last {spec.last_k} epochs"]
    rows = []
    for variant in variants:
        held = sum(held_target(run.records, spec.target_accuracy, spec.last_k) for run in variant.runs)
        rows.append([variant.name, signed(float(np.mean(variant.accuracy_gap()))),
                     signed(float(np.mean(variant.loss_gap())), 4),
                     *[describe_epochs_to_reach(variant.runs, threshold) for threshold in THRESHOLDS],
                     f"{held}/{len(variant.runs)} seeds"])
    return Table(header, rows)


def adjacent_intervals(variants: list[VariantResult]) -> list[tuple[VariantResult, VariantResult, Interval | None]]:
    return [(before, after, welch_interval(before.last_test(), after.last_test()))
            for before, after in zip(variants, variants[1:])]


def comparison_table(variants: list[VariantResult]) -> Table:
    header = ["Step", "Δ mean last test acc (pp)", "95% interval (Welch)", "Welch df", "Verdict"]
    rows = []
    for before, after, interval in adjacent_intervals(variants):
        difference = float(np.mean(after.last_test()) - np.mean(before.last_test()))
        degrees = "n/a" if interval is None else f"{interval.degrees_of_freedom:.1f}"
        rows.append([f"{after.name} vs {before.name}", signed(difference), describe_interval(interval), degrees,
                     verdict(interval)])
    return Table(header, rows)


def per_epoch_table(variants: list[VariantResult]) -> Table:
    """One row per run: its test accuracy (%) after each epoch."""
    epochs = max(len(run.records) for variant in variants for run in variant.runs)
    rows = [[variant.name, str(run.seed), *(percent(record["test_accuracy"]) for record in run.records)]
            for variant in variants for run in variant.runs]
    return Table(["Variant", "Seed", *(str(epoch) for epoch in range(epochs))], rows)


def mean_last_test(variant: VariantResult) -> float:
    return float(np.mean(variant.last_test()))


def _overfitting_sentence(variants: list[VariantResult]) -> str:
    gaps = {variant.name: float(np.mean(variant.accuracy_gap())) for variant in variants}
    loss_gaps = {variant.name: float(np.mean(variant.loss_gap())) for variant in variants}
    most, least = max(gaps, key=gaps.get), min(gaps, key=gaps.get)
    if gaps[most] <= 0:
        return (f"No variant overfits at the end: train accuracy (measured with dropout and augmentation on) "
                f"stays below test accuracy, by {signed(gaps[most])} pp at the least for {most}.")
    sentence = (f"{most} overfits most: at the end its train accuracy exceeds its test accuracy by "
                f"{signed(gaps[most])} pp (test − train loss {signed(loss_gaps[most], 4)})")
    if least != most:
        sentence += f", against {signed(gaps[least])} pp for {least}"
    return sentence + "."


def _step_sentence(before: VariantResult, after: VariantResult, interval: Interval | None) -> str:
    difference = mean_last_test(after) - mean_last_test(before)
    sentence = f"Going from {before.name} to {after.name} changed mean last test accuracy by {signed(difference)} pp"
    if interval is None:
        return sentence + "; with a single seed there is no spread to judge it against."
    return sentence + f" (95% interval {describe_interval(interval)}): {verdict(interval)}."


def observations(variants: list[VariantResult]) -> str:
    """Sentences generated from the numbers; each cites a value shown in the tables."""
    sentences = [f"{variant.name} did not learn: its mean last test accuracy is {percent(mean_last_test(variant))}%, "
                 "where guessing gives 10%." for variant in variants if mean_last_test(variant) <= CHANCE_CEILING]
    sentences.append(_overfitting_sentence(variants))
    sentences += [_step_sentence(before, after, interval) for before, after, interval in adjacent_intervals(variants)]
    best = max(variants, key=mean_last_test)
    sentences.append(f"{best.name} ends highest, with a mean last test accuracy of {percent(mean_last_test(best))}%.")
    return " ".join(sentences)


def interval_note(seeds: int) -> str:
    if seeds < 2:
        return "With 1 seed per variant there is no spread to build an interval from: run with --seeds 3 or more."
    return (f"Intervals are Welch t intervals over {seeds} seeds per variant; with so few seeds they are wide, "
            "and a step counts as distinguishable from noise only if its interval excludes 0.")


def distinct(configs: list[dict], key: str) -> str:
    """The key's value, or its values joined by ' / ' when the variants differ in it."""
    values = sorted({config[key] for config in configs}, key=str)
    return " / ".join(f"{value:g}" if isinstance(value, float) else
                      f"{value:,}" if isinstance(value, int) else str(value) for value in values)


def _interrupted(invocations: list[dict]) -> str:
    count = sum(entry.get("completed") is False for entry in invocations)
    return f", {count} of them interrupted" if count else ""


def _context_lines(spec: Spec, variants: list[VariantResult], info: dict, test_images: int) -> list[str]:
    """Command, data, recipe, seeds, machine and time: what the numbers depend on."""
    machine = info.get("machine", {})
    configs = [variant.config for variant in variants]
    train_images = [{"train_images": info.get("train_images", {}).get(variant.name, "?")} for variant in variants]
    runs = [run for variant in variants for run in variant.runs]
    training_minutes = sum(run.summary["seconds"] for run in runs) / 60
    invocations = info.get("invocations", [])
    wall_minutes = sum(entry["seconds"] for entry in invocations) / 60
    return [
        f"Command: `{info.get('command', 'unknown (study.json missing)')}`",
        f"Data: {distinct(configs, 'dataset')}, {distinct(train_images, 'train_images')} train images; "
        f"tested on the {test_images:,}-image test split",
        f"Recipe: {distinct(configs, 'optimizer')} lr {distinct(configs, 'lr')} "
        f"(momentum {distinct(configs, 'momentum')}), {distinct(configs, 'schedule')} schedule, "
        f"batch {distinct(configs, 'batch_size')}, {distinct(configs, 'epochs')} epochs",
        f"Seeds: {', '.join(map(str, spec.seeds))}",
        f"Machine: {machine.get('cpu', '?')} ({machine.get('cores', '?')} cores), "
        f"torch {machine.get('torch', '?')}, {machine.get('threads', '?')} threads",
        f"Total time: {training_minutes:.1f} min of training over {len(runs)} runs "
        f"({wall_minutes:.1f} min wall clock over {len(invocations)} invocation(s)"
        f"{_interrupted(invocations)})",
    ]


def build_report(study_dir: str | os.PathLike, data_root=None) -> list[Block]:
    study_dir = Path(study_dir)
    spec, variants, info = load_study(study_dir)
    plot_band(variants, _test_accuracy, study_dir / "test_accuracy.png",
              "Test accuracy (mean, min–max band over seeds)", "test accuracy (%)")
    plot_band(variants, _accuracy_gap, study_dir / "gap.png", "Generalization gap (mean, min–max band over seeds)",
              "train − test accuracy (pp)")
    best = max(variants, key=mean_last_test)
    best_run = max(best.runs, key=lambda run: run.last["test_accuracy"])
    analysis = analyse_best_run(best_run, best.name, study_dir, data_root)
    classes = [str(index) for index in range(len(analysis.per_class))]
    return [
        ("heading", f"Study: {spec.name}"),
        ("list", _context_lines(spec, variants, info, analysis.test_images)),
        ("heading", "Accuracy"),
        ("table", accuracy_table(variants, spec)),
        ("paragraph", "Train accuracy is the running accuracy during each epoch, with dropout and augmentation "
                      "active, so it can sit below test accuracy."),
        ("heading", "Generalization and speed"),
        ("table", generalization_table(variants, spec)),
        ("image", Image("test_accuracy.png", "Test accuracy per epoch")),
        ("image", Image("gap.png", "Train − test accuracy per epoch")),
        *([("heading", "Each step against the one before"),
           ("table", comparison_table(variants)),
           ("paragraph", interval_note(len(spec.seeds)))] if len(variants) > 1 else []),
        ("heading", "Test accuracy per epoch, every run"),
        ("table", per_epoch_table(variants)),
        ("heading", "Observations"),
        ("paragraph", observations(variants)),
        ("heading", f"Best variant: {best.name} (seed {analysis.seed}, last.pt)"),
        ("paragraph", f"Test accuracy {percent(analysis.accuracy)}%; per-class accuracy:"),
        ("table", Table(["Class", *classes], [["Accuracy %", *map(percent, analysis.per_class)]])),
        ("image", Image("confusion.png", "Confusion matrix")),
        ("image", Image("misclassified.png", "Misclassified test digits, true and predicted label")),
    ]


def render_markdown(blocks: list[Block]) -> str:
    parts = []
    for kind, content in blocks:
        if kind == "heading":
            parts.append(("# " if not parts else "## ") + content)
        elif kind == "paragraph":
            parts.append(content)
        elif kind == "list":
            parts.append("\n".join(f"- {line}" for line in content))
        elif kind == "table":
            lines = [content.header, ["---"] * len(content.header), *content.rows]
            parts.append("\n".join("| " + " | ".join(line) + " |" for line in lines))
        elif kind == "image":
            parts.append(f"![{content.caption}]({content.file})")
    return "\n\n".join(parts) + "\n"


def _html_inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{piece}</code>" if index % 2 else piece for index, piece in enumerate(pieces))


def render_html(blocks: list[Block]) -> str:
    parts = []
    for kind, content in blocks:
        if kind == "heading":
            tag = "h1" if not parts else "h2"
            parts.append(f"<{tag}>{_html_inline(content)}</{tag}>")
        elif kind == "paragraph":
            parts.append(f"<p>{_html_inline(content)}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_html_inline(line)}</li>" for line in content) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_html_inline(cell)}</th>" for cell in content.header)
            body = "".join("<tr>" + "".join(f"<td>{_html_inline(cell)}</td>" for cell in row) + "</tr>"
                           for row in content.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "image":
            parts.append(f'<figure><img src="{html.escape(content.file)}" alt="{html.escape(content.caption)}">'
                         f"<figcaption>{_html_inline(content.caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em}"
             "img{max-width:100%}")
    title = next((content for kind, content in blocks if kind == "heading"), "mnist-ops study")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_report(study_dir: str | os.PathLike, data_root=None) -> Path:
    """Write report.md, index.html and the figures into the study directory; returns report.md."""
    study_dir = Path(study_dir)
    blocks = build_report(study_dir, data_root)
    atomic_write_bytes(study_dir / "report.md", render_markdown(blocks).encode())
    atomic_write_bytes(study_dir / "index.html", render_html(blocks).encode())
    return study_dir / "report.md"
