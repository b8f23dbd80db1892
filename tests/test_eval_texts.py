"""Calibration and evaluation texts as parameters: every key records them, so other texts get their own rows."""
import argparse

import pytest

from trsp_lib.cli import eval_texts as _texts
from trsp_lib.compare import DEFAULT_TEXTS, compare


@pytest.fixture()
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("TRSP_FRESH", raising=False)
    return tmp_path / "results"


def test_default_texts_reuse_the_rows_and_other_texts_get_new_ones(tiny_model_dir, results_dir, capsys):
    run = dict(model=str(tiny_model_dir), ratios=[0.34], methods="reverse", profile="tiny", limit=0,
               finetune_baselines=False, speed=False)
    first = compare(**run)
    capsys.readouterr()
    again = compare(**run, eval_texts=dict(DEFAULT_TEXTS), overrides={"calib": "wiki"})  # the notebooks' defaults
    assert "computing" not in capsys.readouterr().out and again == first
    news = compare(**run, eval_texts={"wiki": "news", "news": "news"})
    assert "[dense] computing" in capsys.readouterr().out
    assert news[0]["ppl_wiki"] == news[0]["ppl_news"] != first[0]["ppl_wiki"]
    assert first[0]["params"]["texts"] == DEFAULT_TEXTS
    assert news[0]["params"]["texts"] == {"wiki": "news", "news": "news"}


def test_text_flags_take_labels():
    parse = lambda *t: _texts(argparse.Namespace(text=list(t) or None))  # noqa: E731
    assert parse() == {"wiki": "wiki", "news": "news"}
    assert parse("wiki=wikitext2", "news=news") == {"wiki": "wikitext2", "news": "news"}
    assert parse("data/text/news_test.txt") == {"news_test.txt": "data/text/news_test.txt"}
