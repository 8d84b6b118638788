import pytest

from mnist_ops.errors import UserError
from mnist_ops.report import figure_format, plot_curves


def test_figure_format_follows_the_suffix_and_refuses_the_unknown():
    assert [figure_format(name) for name in ("a.png", "a.JPG", "a.jpeg", "a.svg", "a.pdf")] == \
        ["png", "jpeg", "jpeg", "svg", "pdf"]
    with pytest.raises(UserError, match="cannot write a figure to a.gif"):
        figure_format("a.gif")


def test_a_one_epoch_run_draws_integer_epoch_ticks(tmp_path, monkeypatch):
    import mnist_ops.report as report

    drawn = {}
    monkeypatch.setattr(report, "save_figure", lambda figure, path: drawn.update(figure=figure))
    record = {"epoch": 0, "train_loss": 0.5, "test_loss": 0.4, "train_accuracy": 80.0, "test_accuracy": 85.0}
    plot_curves([record], tmp_path / "curves.png")
    drawn["figure"].canvas.draw()
    for axes in drawn["figure"].axes:
        low, high = axes.get_xlim()
        assert [tick for tick in axes.get_xticks() if low <= tick <= high] == [0.0]


def test_the_legend_says_how_train_and_test_were_measured(tmp_path, monkeypatch):
    """An EMA run's first epoch plotted 32.5% train against 9.8% test, with nothing saying the two are of different
    weights; label smoothing's floor sat in the train loss unexplained."""
    import mnist_ops.report as report
    from mnist_ops.presets import build_config
    from mnist_ops.report import curve_notes

    drawn = {}
    monkeypatch.setattr(report, "save_figure", lambda figure, path: drawn.update(figure=figure))
    record = {"epoch": 0, "train_loss": 0.5, "test_loss": 0.4, "train_accuracy": 80.0, "test_accuracy": 85.0}
    config = build_config("lean-8k", None, {"label_smoothing": 0.1})
    plot_curves([record], tmp_path / "curves.png", "t", *curve_notes(config))
    legends = [[text.get_text() for text in axes.get_legend().get_texts()] for axes in drawn["figure"].axes]
    assert legends == [["train (during the epoch, augmented, loss with label smoothing)",
                        "test (after the epoch, EMA of the weights)"]] * 2
    assert curve_notes(build_config("seed-lean", None, {"augment": "none"})) == ("during the epoch", "after the epoch")
