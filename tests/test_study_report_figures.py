from pathlib import Path

from mnist_ops.study_report.figures import epoch_matrix, plot_band, record_test_accuracy
from mnist_ops.study_report.load import Run, VariantResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def variant(*curves):
    runs = [Run(seed, [{"epoch": e, "test_accuracy": a} for e, a in enumerate(curve)], {}, Path("."))
            for seed, curve in enumerate(curves, start=1)]
    return VariantResult("v", {}, runs)


def test_epoch_matrix_numbers_epochs_from_zero_over_the_epochs_every_run_has():
    epochs, values = epoch_matrix(variant([97.0, 98.0, 99.0], [96.0, 97.5]), record_test_accuracy)
    assert epochs.tolist() == [0, 1]
    assert values.tolist() == [[97.0, 98.0], [96.0, 97.5]]


def test_a_one_epoch_band_has_one_integer_tick_at_epoch_zero(tmp_path, monkeypatch):
    import mnist_ops.report as report

    drawn = {}
    monkeypatch.setattr(report, "save_figure", lambda figure, path: drawn.update(figure=figure, path=path))
    plot_band([variant([97.0], [96.0])], record_test_accuracy, tmp_path / "t.png", "t", "acc")
    axes = drawn["figure"].axes[0]
    drawn["figure"].canvas.draw()
    low, high = axes.get_xlim()
    ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
    assert ticks == [0.0]
    assert axes.lines[0].get_xdata().tolist() == [0]


def test_plot_band_writes_a_png(tmp_path):
    plot_band([variant([97.0, 98.0], [96.0, 98.5])], record_test_accuracy, tmp_path / "t.png", "t", "acc")
    assert (tmp_path / "t.png").read_bytes()[:8] == PNG_MAGIC
