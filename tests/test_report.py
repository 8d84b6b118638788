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
