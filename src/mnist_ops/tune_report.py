"""The tune report: what was searched, the best trials, Optuna's plots and the confirm runs.

Built as blocks and rendered by the study report's renderer, as `report.md` and `index.html`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mnist_ops.fileio import atomic_write_bytes
from mnist_ops.study_report.render import Image, Table, render_html, render_markdown
from mnist_ops.study_report.tables import mean_std_min, percent
from mnist_ops.tune import BEST_CONFIG, CONFIRM_DIR, TuneSpec

TOP_TRIALS = 10
PLOTS = (  # (file, caption, optuna.visualization.matplotlib function, needs completed trials)
    ("optimization_history.png", "Objective of every trial and the best so far", "plot_optimization_history", 1),
    ("param_importances.png", "Parameter importances (fANOVA over completed trials)", "plot_param_importances", 2),
    ("parallel_coordinate.png", "Parameters of every completed trial, coloured by objective",
     "plot_parallel_coordinate", 1),
    ("intermediate_values.png", "Validation accuracy after each epoch, every trial (pruned ones stop early)",
     "plot_intermediate_values", 1),
)


def _format(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def draw_plots(study, directory: Path, completed: int) -> list[tuple[str, object]]:
    """Optuna's matplotlib plots as PNG files; a plot that needs more trials is named, not drawn."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")  # Optuna's matplotlib plots go through pyplot: no display here
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as plots
    from optuna.exceptions import ExperimentalWarning

    from mnist_ops.report import save_figure

    blocks: list[tuple[str, object]] = []
    for file, caption, name, needed in PLOTS:
        if completed < needed:
            blocks.append(("paragraph", f"{caption}: needs {needed} completed trials, this study has {completed}."))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)  # matplotlib: an axis over a single value
            axes = getattr(plots, name)(study)
        figure = np.ravel(axes)[0].figure
        figure.set_size_inches(9, 5)
        save_figure(figure, directory / file)
        plt.close(figure)
        blocks.append(("image", Image(file, caption)))
    return blocks


def trials_table(trials: list, space_names: list[str]) -> Table:
    by_seed = any("seed_values" in trial.user_attrs for trial in trials)
    header = ["Trial", "Objective %", *space_names, *(["Per seed %"] if by_seed else []),
              "Epochs (all seeds)" if by_seed else "Epochs", "Seconds", "Worker"]
    rows = [[str(trial.number), percent(trial.value), *(_format(trial.params.get(name, "")) for name in space_names),
             *([_seed_values(trial)] if by_seed else []),
             str(trial.user_attrs.get("epochs_trained", "")), _format(trial.user_attrs.get("seconds", "")),
             str(trial.user_attrs.get("worker", ""))] for trial in trials]
    return Table(header, rows)


def _seed_values(trial) -> str:
    """'seed 1: 99.48, seed 2: 99.52' for a trial scored over several seeds (a pruned one has none)."""
    return ", ".join(f"seed {seed}: {value:.2f}" for seed, value in trial.user_attrs.get("seed_values", {}).items())


def _state_line(trials: list) -> str:
    from optuna.trial import TrialState

    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    retried = [t for t in trials if "failed_trial" in t.system_attrs]
    surplus = sum(bool(t.user_attrs.get("surplus")) for t in trials)
    line = (f"Trials: {counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
            f"{counts[TrialState.FAIL]} failed, {counts[TrialState.RUNNING]} running"
            + (f", {counts[TrialState.WAITING]} queued" if counts[TrialState.WAITING] else ""))
    by_number = {t.number: t for t in trials}
    for interrupted in (False, True):
        # a retry still queued has not run again yet (a review found one counted as re-run)
        pairs = ", ".join(f"{t.system_attrs['retry_history'][-1]} as {t.number}"
                          + (" (queued)" if t.state == TrialState.WAITING else "") for t in retried
                          if bool(by_number[t.system_attrs["retry_history"][-1]].user_attrs.get("interrupted"))
                          == interrupted)
        if pairs:
            line += f"; re-run after {'Ctrl+C or SIGTERM stopped them' if interrupted else 'their worker died'}: {pairs}"
    return line + (f" ({surplus} surplus)" if surplus else "")


def training_set(limit_train: int) -> str:
    """What `validation = 0` trains on: all training images, or the first `limit_train` the spec kept."""
    return (f"the first {limit_train:,} of all training images (the spec's limit_train; no validation split "
            "held out)" if limit_train else "the full training set")


def confirm_blocks(directory: Path, spec: TuneSpec) -> list[tuple[str, object]]:
    """The confirm study's runs: test accuracy of the best config trained without the validation split; none when
    they tested an earlier best (the search went on after confirming)."""
    from mnist_ops.study_report.load import held_target, load_study
    from mnist_ops.tune import stale_confirm

    confirm = directory / CONFIRM_DIR
    if not (confirm / "spec.toml").is_file():
        return [("paragraph", "Not confirmed yet: `--confirm N` trains best.toml without the validation split for "
                              "N seeds and reports test accuracy here.")]
    changed = stale_confirm(directory, spec)
    if changed:
        return [("paragraph", f"Not confirmed: `{CONFIRM_DIR}/` holds the test runs of an earlier best, whose recipe "
                              f"differs from best.toml's ({changed}), so they are left out here. Delete `{CONFIRM_DIR}/` "
                              "and run with `--confirm N` to test best.toml.")]
    spec, variants, _ = load_study(confirm)
    runs, diverged = variants[0].runs, variants[0].diverged
    rows = [[str(run.seed), percent(run.best_test_accuracy), percent(run.last["test_accuracy"]),
             "yes" if held_target(run.records, spec.target_accuracy, spec.last_k) else "no"] for run in runs]
    rows += [[str(seed), f"diverged: {what}", "", "no"] for seed, what in sorted(diverged.items())]
    last = [run.last["test_accuracy"] for run in runs]
    result = f"last-epoch test accuracy {mean_std_min(last)}" if runs else "every run diverged"
    return [("paragraph", f"best.toml trained on {training_set(variants[0].config.get('limit_train', 0))} and tested on the "
                          f"test set, {len(runs) + len(diverged)} of {len(spec.seeds)} seeds"
                          + (f" ({len(diverged)} diverged)" if diverged else "") +
                          f": {result}. The study report is `{CONFIRM_DIR}/report.md`."),
            ("table", Table(["Seed", "Best test %", "Last test %",
                             f"Held ≥ {spec.target_accuracy}% in the last {spec.last_k} epochs"], rows))]


def build_tune_report(directory: Path, spec: TuneSpec, study, storage: str, command: str) -> list:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    completed = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    names = [param.name for param in spec.space]
    base = spec.base
    context = [
        f"Command: `{command}`",
        f"Study: '{study.study_name}' in {storage}",
        f"Base: preset {base.preset}, model {base.model}, {base.epochs} epochs, batch {base.batch_size}, "
        f"{base.optimizer} lr {base.lr}, {base.schedule} schedule, augment {base.augment} ({base.interpolation}), "
        f"{base.precision}"
        + (f", first {base.limit_train:,} training images" if base.limit_train else "")
        + f"; each trial's {', '.join(names)} replace the base's (search space below)",
        f"Validation: {base.validation:,} training images held out (stratified, the same for every trial); "
        "trials train on the rest and never read the test set",
        (f"Objective: mean validation accuracy over the last {spec.last_k} epochs" if spec.score == "mean" else
         f"Objective: the lowest validation accuracy in the last {spec.last_k} epochs (the record rule)")
        + (f", {'averaged' if spec.score == 'mean' else 'the worst'} over seeds {base.seed}-{base.seed + spec.seeds - 1}"
           + (" (the pruner judges the first; a pruned trial's value is its first seed's)" if spec.pruner != "none" else "")
           if spec.seeds > 1 else f", seed {base.seed}") + " (maximized)",
        f"Sampler: {spec.sampler} (seed {spec.sampler_seed}"
        + (f", {spec.startup_trials} start-up trials" if spec.sampler != "random" else "")  # random has none
        + f"); pruner: {spec.pruner}",
        _state_line(trials),
        f"Training time: {sum(t.user_attrs.get('seconds', 0) for t in trials) / 60:.1f} min over all trials",
    ]
    space = Table(["Key", "Searched", "Best"],
                  [[p.name, p.describe(), _format(completed[0].params[p.name]) if completed else "-"]
                   for p in spec.space])
    best = ([("paragraph", f"Trial {completed[0].number} scored {percent(completed[0].value)}%. `{BEST_CONFIG}` holds "
                           f"its config with the validation split off: `mnist-ops train --config {BEST_CONFIG}` "
                           f"trains it on {training_set(base.limit_train)}.")] if completed else
            [("paragraph", "No trial completed yet.")])
    return [
        ("heading", f"Tune: {spec.name}"),
        ("list", context),
        ("heading", "Search space"),
        ("table", space),
        ("heading", "Best trials"),
        *best,
        ("table", trials_table(completed[:TOP_TRIALS], names)),
        ("heading", "Plots"),
        *draw_plots(study, directory, len(completed)),
        ("heading", "Confirmed on the test set"),
        *confirm_blocks(directory, spec),
    ]


def write_tune_report(directory: str | os.PathLike, spec: TuneSpec, storage: str | None, study_name: str | None,
                      command: str) -> Path:
    """report.md and index.html (and the plots) in the tune directory; returns report.md."""
    import optuna

    from mnist_ops.distributed import describe_url, open_storage, storage_url

    directory = Path(directory)
    url = storage_url(storage, directory)
    study = optuna.load_study(study_name=study_name or spec.name, storage=open_storage(url))
    where = "the embedded SQLite file optuna.db" if storage is None else describe_url(url)
    blocks = build_tune_report(directory, spec, study, where, command)
    atomic_write_bytes(directory / "report.md", render_markdown(blocks).encode())
    atomic_write_bytes(directory / "index.html", render_html(blocks).encode())
    atomic_write_bytes(directory / "trials.json", (json.dumps(
        [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
          "epochs_trained": t.user_attrs.get("epochs_trained"), "worker": t.user_attrs.get("worker"),
          **({"seed_values": t.user_attrs["seed_values"]} if "seed_values" in t.user_attrs else {})}
         for t in study.get_trials(deepcopy=False)], indent=1) + "\n").encode())
    return directory / "report.md"
