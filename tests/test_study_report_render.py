import pytest

from mnist_ops.study_report.render import Image, Table, render_html, render_markdown

BLOCKS = [
    ("heading", "Study: x"),
    ("list", ["Command: `mnist-ops study --spec a<b>.toml`"]),
    ("table", Table(["Variant", "Acc"], [["bn", "99.10"], ["plain", "98.00"]])),
    ("paragraph", "plain < bn"),
    ("heading", "Figures"),
    ("image", Image("gap.png", "Train − test accuracy")),
]


def test_markdown_from_blocks():
    assert render_markdown(BLOCKS) == (
        "# Study: x\n\n- Command: `mnist-ops study --spec a<b>.toml`\n\n"
        "| Variant | Acc |\n| --- | --- |\n| bn | 99.10 |\n| plain | 98.00 |\n\n"
        "plain < bn\n\n## Figures\n\n![Train − test accuracy](gap.png)\n")


def test_html_from_the_same_blocks_escapes_text_and_keeps_code_spans():
    page = render_html(BLOCKS)
    assert "<title>Study: x</title>" in page and "<h1>Study: x</h1>" in page and "<h2>Figures</h2>" in page
    assert "<li>Command: <code>mnist-ops study --spec a&lt;b&gt;.toml</code></li>" in page
    assert "<tr><td>bn</td><td>99.10</td></tr>" in page and "<p>plain &lt; bn</p>" in page
    assert '<img src="gap.png" alt="Train − test accuracy">' in page


@pytest.mark.parametrize("render", [render_markdown, render_html])
def test_an_unknown_block_kind_is_an_error_not_a_silent_gap(render):
    with pytest.raises(ValueError, match="unknown block kind 'chart'"):
        render([("chart", "x")])
