"""The book's quiet switch and its one plotting style."""
import matplotlib
import pandas as pd
import pytest

from study import style
from trsp_lib.log import say
from trsp_lib.zeroshot import DEFAULT_TASKS, chance_level

matplotlib.use("Agg")


def test_say_prints_unless_quiet(monkeypatch, capsys):
    monkeypatch.delenv("TRSP_QUIET", raising=False)
    say("[trsp-0.25]", "cached")
    assert capsys.readouterr().out == "[trsp-0.25] cached\n"
    monkeypatch.setenv("TRSP_QUIET", "1")
    say("[trsp-0.25] cached")
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("TRSP_QUIET", "0")
    say("loud again")
    assert capsys.readouterr().out == "loud again\n"


@pytest.fixture
def styled():
    with matplotlib.rc_context(), pd.option_context("display.max_rows", 60):
        saved = {k: pd.get_option(k) for k in style.PANDAS}
        style.use()
        yield
        for k, v in saved.items():
            pd.set_option(k, v)


def test_use_sets_full_width_sharp_legible_figures_and_whole_tables(styled):
    rc = matplotlib.rcParams
    assert rc["figure.dpi"] >= 150 and rc["figure.figsize"][0] == style.TEXT_WIDTH_IN
    assert min(rc["xtick.labelsize"], rc["ytick.labelsize"]) >= 9
    frame = pd.DataFrame({"ratio": [0.125] * 80, "ppl": [10446301063.65] * 80})
    html = frame._repr_html_()
    assert "rows ×" not in html and "..." not in html
    assert "0.125000" not in html and "1.045e+10" in html


def test_chance_line_is_the_expected_accuracy_of_guessing(styled):
    level = chance_level()
    assert level == pytest.approx((0.5 + 0.5 + 0.25 + 0.25 + 0.25) / 5, abs=0.002)  # ARC has a few 3/5-choice items
    assert chance_level(("piqa",), limit=10) == 0.5
    with pytest.raises(ValueError, match="not multiple choice"):
        chance_level(DEFAULT_TASKS + ("lambada",))
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=style.figsize(0.4))
    line = style.chance_line(ax)
    assert line.get_ydata()[0] == pytest.approx(level)
    assert any(t.get_text() == f"chance {level:.2f}" for t in ax.texts)
    assert fig.get_size_inches()[0] == style.TEXT_WIDTH_IN
    plt.close(fig)


def test_method_names_and_plain_log_ticks(styled):
    assert style.method_name("sleb+ft") == "SLEB + fine-tune" and style.method_name("trsp") == "TRSP"
    assert style.method_name("shortgpt+lin") == "ShortGPT + lin"  # composed from the registry's step titles
    assert style.method_name("trsp (tuned)") == "TRSP (tuned)"  # a study suffix is kept
    assert style.method_name("magic") == "magic"  # no pipeline: passed through, never guessed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([20, 900], [0, 1])
    style.plain_log_axis(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert ax.get_xscale() == "log" and "50" in labels and "100" in labels and "500" in labels
    plt.close(fig)


def test_number_keeps_decimals_until_a_value_explodes():
    assert style.number(91.3349) == "91.33" and style.number(4188.326) == "4,188.33"
    assert style.number(10446301063.65) == "1.0e+10" and style.number(float("nan")) == "-"
    assert (style.number(8501.6 / 3.1e8) == "2.7e-05" and style.number(0.004) == "4.0e-03"
            and style.number(0.92) == "0.92")
    assert style.number(0.0) == "0.00" and style.number(None) == "-"


def test_label_points_keeps_close_labels_apart():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from study.style import label_points

    fig, ax = plt.subplots()
    xs, ys = [1.0, 1.0, 1.02, 5.0], [1.0, 1.01, 1.0, 5.0]
    ax.scatter(xs, ys)
    texts = label_points(ax, xs, ys, ["sleb + lin", "sleb + kd", "sleb + lin + kd", "far"])
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in texts]
    assert all(t.get_fontsize() >= 9 for t in texts)
    assert not any(boxes[a].overlaps(boxes[b]) for a in range(4) for b in range(a + 1, 4))  # no label on another
    plt.close(fig)


def test_fmt_and_table_show_three_digits_and_bounds():
    import pandas as pd

    from study import style

    assert [style.fmt(v) for v in (91.333, 0.4691, 4188.3, 390493476.97, None)] == ["91.3", "0.469", "4,188",
                                                                                   "> 10⁶", "-"]
    html = style.table(pd.DataFrame({"method": ["sleb+ft"], "ppl_wiki": [1e10]}), "Caption.").to_html()
    assert "<caption>Caption.</caption>" in html and "SLEB + fine-tune" in html and "&gt; 10⁶" in html
    assert "PPL wiki" in html and ">0<" not in html  # human column name, no 0..n-1 index


def test_model_name_comes_from_the_registry():
    from study.style import model_name

    assert model_name("smollm2-135m") == "SmolLM2-135M" and model_name("gemma3-270m") == "Gemma-3-270m"
    assert model_name("meta-llama/Llama-2-7b-hf") == "Llama-2-7b-hf" and model_name(None) == "n/a"
