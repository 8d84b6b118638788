import json
import statistics

import pytest

from mnist_ops.engine import save_checkpoint
from mnist_ops.fileio import atomic_write_bytes
from mnist_ops.engine import build_model
from mnist_ops.models import count_parameters
from mnist_ops.study import parse_spec, spec_to_toml
from mnist_ops.study_report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- the report

# Test accuracy per epoch, one list per seed. 'bn' reaches 99.0% in epoch 2 in every seed, 99.4% in
# 2 of 3 seeds, and holds 99.4% over the last 2 epochs in those 2.
CURVES = {
    "plain": [[97.0, 97.8, 98.0], [97.1, 98.0, 98.2], [97.3, 98.1, 98.4]],
    "bn": [[98.9, 99.42, 99.45], [98.8, 99.45, 99.5], [98.7, 99.2, 99.3]],
}
TRAIN_GAP = {"plain": 1.5, "bn": 0.25}  # train accuracy = test accuracy + gap


def write_fake_run(directory, config, seed, accuracies):
    records = [{"epoch": epoch, "train_loss": 0.1, "train_accuracy": accuracy + TRAIN_GAP[directory.parent.name],
                "test_loss": 0.12, "test_accuracy": accuracy, "lr": 0.05, "seconds": 2.0,
                "train_images_per_second": 500.0} for epoch, accuracy in enumerate(accuracies)]
    model = build_model(config)
    summary = {"parameters": count_parameters(model), "best_test_accuracy": max(accuracies),
               "epochs": len(accuracies), "seconds": 6.0}
    atomic_write_bytes(directory / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    save_checkpoint(directory / "last.pt", {"model_name": config.model, "model": model.state_dict(),
                                            "config": config.to_dict(), "epoch": len(accuracies) - 1,
                                            "metrics": records[-1], "mean": 0.1307, "std": 0.3081})
    atomic_write_bytes(directory / "done.json", json.dumps({"seed": seed, "summary": summary}).encode())


@pytest.fixture(scope="module")
def fake_study(tmp_path_factory):
    """A finished study written by hand, so every number in the report is known."""
    directory = tmp_path_factory.mktemp("fake") / "study"
    spec = parse_spec({"name": "fake", "seeds": 3, "last_k": 2, "variant": [
        {"name": "plain", "preset": "seed-lean", "model": "seed-lean-plain", "augment": "none", "epochs": 3},
        {"name": "bn", "preset": "seed-lean", "model": "seed-lean-bn", "augment": "none", "epochs": 3},
    ]}, "fake.toml")
    atomic_write_bytes(directory / "spec.toml", spec_to_toml(spec).encode())
    for variant in spec.variants:
        for seed, accuracies in zip(spec.seeds, CURVES[variant.name]):
            write_fake_run(directory / variant.name / f"seed{seed}", variant.config, seed, accuracies)
    return directory


def mean_std_min(values):
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (min {min(values):.2f})"


def table_row(markdown, first_cell):
    rows = [line for line in markdown.splitlines() if line.startswith(f"| {first_cell} |")]
    assert rows, f"no table row for {first_cell}"
    return rows


@pytest.mark.integration
def test_report_tables_figures_and_html(fake_study, mnist_root):
    path = write_report(fake_study, data_root=mnist_root)
    markdown = path.read_text()
    last = {name: [curve[-1] for curve in curves] for name, curves in CURVES.items()}
    accuracy_row, generalization_row, *per_epoch_rows = table_row(markdown, "plain")
    assert len(per_epoch_rows) == len(CURVES["plain"])  # one row per seed in the per-epoch table
    for row, curve in zip(per_epoch_rows, CURVES["plain"]):
        assert row.endswith(" | ".join(f"{value:.2f}" for value in curve) + " |")
    assert "| seed-lean-plain | 7,676 |" in accuracy_row and mean_std_min(last["plain"]) in accuracy_row
    last_two = {name: [value for curve in curves for value in curve[-2:]] for name, curves in CURVES.items()}
    assert f"| never | never | {mean_std_min(last_two['plain'])} | 0/3 seeds |" in generalization_row
    assert "| +1.50 |" in generalization_row
    accuracy_row, generalization_row = table_row(markdown, "bn")[:2]
    assert mean_std_min(last["bn"]) in accuracy_row
    assert f"| 1.0 | 1.0 (1 of 3 never) | {mean_std_min(last_two['bn'])} | 2/3 seeds |" in generalization_row
    step = table_row(markdown, "bn vs plain")[0]
    difference = statistics.mean(last["bn"]) - statistics.mean(last["plain"])
    assert f"| {difference:+.2f} |" in step and step.endswith("| distinguishable from noise |")
    observations = markdown.split("## Observations")[1].split("##")[0]
    assert "plain overfits most" in observations and "accuracy by 1.50 pp" in observations
    assert "| Variant | Seed | 0 | 1 | 2 |" in markdown  # epochs numbered as in metrics.jsonl
    assert f"{difference:+.2f} pp" in observations
    for figure in ("test_accuracy.png", "gap.png", "confusion.png", "misclassified.png"):
        assert (fake_study / figure).read_bytes()[:8] == PNG_MAGIC
        assert f"]({figure})" in markdown
    page = (fake_study / "index.html").read_text()
    assert '<img src="test_accuracy.png"' in page and f"<td>{mean_std_min(last['bn'])}</td>" in page
    assert "<td>distinguishable from noise</td>" in page


def test_a_study_copied_without_checkpoints_is_refused_before_any_figure_is_drawn(fake_study, tmp_path):
    import shutil

    from mnist_ops.errors import UserError

    copy = tmp_path / "copy"
    shutil.copytree(fake_study, copy, ignore=shutil.ignore_patterns("*.pt", "*.png", "report.md", "index.html"))
    with pytest.raises(UserError, match="last.pt is missing: the report evaluates the best run's checkpoint"):
        write_report(copy)
    assert not list(copy.glob("*.png")) and not (copy / "report.md").exists()
