import statistics

import pytest

from fake_study import CURVES, write_fake_study
from mnist_ops.study import STUDY_DIR_FILES
from mnist_ops.study_report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- the report

@pytest.fixture(scope="module")
def fake_study(tmp_path_factory):
    return write_fake_study(tmp_path_factory.mktemp("fake") / "study")


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
    written = {path.name for path in fake_study.iterdir() if path.is_file()}
    assert written and written <= set(STUDY_DIR_FILES)  # a variant may not take one of these names (study.py)


def test_a_study_copied_without_checkpoints_is_refused_before_any_figure_is_drawn(fake_study, tmp_path):
    import shutil

    from mnist_ops.errors import UserError

    copy = tmp_path / "copy"
    shutil.copytree(fake_study, copy, ignore=shutil.ignore_patterns("*.pt", "*.png", "report.md", "index.html"))
    with pytest.raises(UserError, match="last.pt is missing: the report evaluates the best run's checkpoint"):
        write_report(copy)
    assert not list(copy.glob("*.png")) and not (copy / "report.md").exists()
