"""The pipeline registry: labels, what steps need, and row keys that new steps and fields never change."""
import copy
import dataclasses

import pytest
import torch

from trsp_lib import pipelines
from trsp_lib.pipelines import Job, Step, finish, parse, select
from trsp_lib.tiny import tiny_model
from trsp_lib.method.trsp import TRSPConfig, config_key


def legacy_key_params(label: str, ratio: float, n: int, cfg: TRSPConfig, cs: int, budget: int) -> dict:
    """How `compare` built a row's key before the registry existed (the committed rows' keys), when
    `TRSPConfig` had no stage2_loss and kd_temperature yet."""
    method = label.removesuffix("+ft")
    old = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("stage2_loss", "kd_temperature", "heal_last")}
    return {"method": label, "ratio": ratio, "n": n, "config": old,
            "criterion_samples": cs if method not in ("trsp", "reverse", "random") else None,
            "ft_steps": budget if label.endswith("+ft") else 0}


@pytest.mark.parametrize("label", ["trsp", "shortgpt", "angular", "sleb", "ppl", "taylor", "laco", "reverse", "random",
                                   "shortgpt+ft", "laco+ft", "reverse+ft", "random+ft"])
def test_todays_rows_keep_their_key_params(label):
    cfg = TRSPConfig(ratio=0.25, lambda1=0.01)
    assert parse(label).key_params(0.25, 8, cfg, 16, 48) == legacy_key_params(label, 0.25, 8, cfg, 16, 48)


def test_edits_and_new_healing_add_a_key_entry_only_where_present():
    cfg = TRSPConfig()
    opts = {"lin": {"alpha": 0.1, "sequential": True}, "heal": {"temperature": 2.0, "lr": None}}
    assert parse("sleb+ft").key_params(0.25, 8, cfg, 16, 48, opts) == legacy_key_params("sleb+ft", 0.25, 8, cfg, 16, 48)
    lin_ft = parse("sleb+lin+ft").key_params(0.25, 8, cfg, 16, 48, opts)
    assert (lin_ft["edits"] == {"lin": {"alpha": 0.1, "sequential": True}} and "heal" not in lin_ft
            and lin_ft["ft_steps"] == 48)
    kd = parse("sleb+kd")
    key = kd.key_params(0.25, 8, kd.configure(cfg, opts), 16, 48, opts)
    assert (key["heal"] == {"kind": "kd", "temperature": 2.0} and key["config"]["kd_temperature"] == 2.0
            and "edits" not in key)
    assert parse("trsp:kd").configure(cfg, opts).stage2_loss == "kd" and parse("sleb+ft").configure(cfg, {}) == cfg
    scoped = parse("sleb+ft").configure(cfg, {"heal": {"last": 2}})
    assert config_key(scoped)["heal_last"] == 2 and "heal_last" not in config_key(cfg)  # a new key only when scoped
    assert parse("trsp:kd").configure(cfg, {"heal": {"last": 2}}).heal_last == 0      # TRSP's stage 2 trains all
    assert parse("sleb+lin+ft").needs() == {"calib", "dense", "steps"} and parse("reverse").needs() == set()
    with pytest.raises(ValueError, match="must be the last step"):
        parse("sleb+ft+lin")
    with pytest.raises(ValueError, match="a step may need only"):
        Step("x", lambda job: {}, "x", needs=frozenset({"gpu"}))


def test_a_config_field_added_later_changes_no_key_at_its_default(monkeypatch):
    from trsp_lib.method.config import LATER_FIELDS

    committed = {k: v for k, v in dataclasses.asdict(TRSPConfig()).items()
                 if k not in ("stage2_loss", "kd_temperature", "heal_last")}
    assert config_key(TRSPConfig()) == committed                     # the committed rows' config entry
    assert config_key(TRSPConfig(stage2_loss="kd")) == {**committed, "stage2_loss": "kd"}
    assert config_key(TRSPConfig(lambda1=0.01))["lambda1"] == 0.01    # an old field always counts
    Later = dataclasses.make_dataclass("Later", [("new_field", int, 3)], bases=(TRSPConfig,))
    monkeypatch.setattr("trsp_lib.method.config.LATER_FIELDS", (*LATER_FIELDS, "new_field"))
    assert config_key(Later()) == committed and config_key(Later(new_field=4)) == {**committed, "new_field": 4}


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
