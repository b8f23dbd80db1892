"""The pipeline registry: labels, what steps need, and the row keys that record every setting."""
import copy
import dataclasses

import pytest
import torch

from trsp_lib import pipelines
from trsp_lib.pipelines import Job, Step, finish, parse, select
from trsp_lib.tiny import tiny_model
from trsp_lib.method.trsp import TRSPConfig, config_key


@pytest.mark.parametrize("label", ["trsp", "shortgpt", "angular", "sleb", "ppl", "taylor", "laco", "reverse", "random",
                                   "shortgpt+ft", "laco+ft", "reverse+ft", "random+ft"])
def test_plain_rows_key_every_entry(label):
    cfg = TRSPConfig(ratio=0.25, lambda1=0.01)
    plain = parse(label)
    assert plain.key_params(0.25, 8, cfg, 16, 48) == {
        "method": label, "ratio": 0.25, "n": 8, "config": dataclasses.asdict(cfg),
        "criterion_samples": 16 if plain.select.criterion else None, "ft_steps": 48 if plain.heal else 0,
        "edits": {}, "heal": {} if plain.heal else None}


def test_edits_and_healing_key_their_settings():
    cfg = TRSPConfig()
    opts = {"lin": {"alpha": 0.1, "sequential": True}, "heal": {"temperature": 2.0, "lr": None}}
    lin_ft = parse("sleb+lin+ft").key_params(0.25, 8, cfg, 16, 48, opts)
    assert (lin_ft["edits"] == {"lin": {"alpha": 0.1, "sequential": True}} and lin_ft["heal"] == {}
            and lin_ft["ft_steps"] == 48)
    kd = parse("sleb+kd")
    key = kd.key_params(0.25, 8, kd.configure(cfg, opts), 16, 48, opts)
    assert key["heal"] == {"kind": "kd", "temperature": 2.0} and key["config"]["kd_temperature"] == 2.0
    assert key["edits"] == {}
    assert parse("trsp:kd").configure(cfg, opts).stage2_loss == "kd" and parse("sleb+ft").configure(cfg, {}) == cfg
    scoped = parse("sleb+ft").configure(cfg, {"heal": {"last": 2}})
    assert config_key(scoped)["heal_last"] == 2 and config_key(cfg)["heal_last"] == 0  # every field, always
    assert parse("trsp:kd").configure(cfg, {"heal": {"last": 2}}).heal_last == 0      # TRSP's stage 2 trains all
    assert parse("sleb+lin+ft").needs() == {"calib", "dense", "steps"} and parse("reverse").needs() == set()
    with pytest.raises(ValueError, match="must be the last step"):
        parse("sleb+ft+lin")
    with pytest.raises(ValueError, match="a step may need only"):
        Step("x", lambda job: {}, "x", needs=frozenset({"gpu"}))


def test_the_config_key_records_every_field():
    assert config_key(TRSPConfig()) == dataclasses.asdict(TRSPConfig())
    assert config_key(TRSPConfig(stage2_loss="kd"))["stage2_loss"] == "kd"


def test_unknown_steps_name_the_choices():
    with pytest.raises(ValueError, match="choose from given, trsp, trsp:kd, shortgpt"):
        parse("magic")
    with pytest.raises(ValueError, match="healing: ft, kd"):
        parse("sleb+magic")


def test_twins_are_plain_selections_with_the_same_further_steps():
    assert parse("angular+ft").same_model_as(parse("reverse+ft")) and parse("sleb").same_model_as(parse("taylor"))
    assert not parse("angular").same_model_as(parse("reverse+ft"))
    assert not parse("reverse").same_model_as(parse("trsp"))       # TRSP trains while it selects
    assert not parse("reverse").same_model_as(parse("laco"))       # LaCo merges weights


def test_select_reuses_given_layers_unless_the_selection_changes_weights():
    model = tiny_model("llama", n_layers=6)
    calib = torch.randint(3, 100, (4, 16))
    job = Job(copy.deepcopy(model), 2, TRSPConfig(), calib, 4, budget=1)
    info = select(parse("shortgpt+ft"), job, [0, 5])
    assert info["removed"] == [0, 5] and model.config.num_hidden_layers == 6 and job.model.config.num_hidden_layers == 4
    before = [p.detach().clone() for p in job.model.parameters()]
    assert finish(parse("shortgpt+ft"), job)[0] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, job.model.parameters()))  # the healing step trained it
    with pytest.raises(ValueError, match="pass them"):
        select(parse("given"), Job(copy.deepcopy(model), 2, TRSPConfig()))
    assert pipelines.SELECTIONS["laco"].changes_weights and pipelines.SELECTIONS["sleb"].criterion
