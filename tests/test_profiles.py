"""profiles.load: the one way a profile becomes a configuration and evaluation settings."""
import pytest

from trsp_lib.profiles import PROFILES, EvalSettings, load
from trsp_lib.method.trsp import TRSPConfig


def test_load_splits_a_profile_and_applies_overrides():
    cfg, evals = load("tiny", lambda1=0.02, eval_seq_len=64, n_remove=None)  # None: an unset flag, ignored
    assert isinstance(cfg, TRSPConfig) and cfg.lambda1 == 0.02 and cfg.n_samples == PROFILES["tiny"]["n_samples"]
    assert evals == EvalSettings(eval_seq_len=64, eval_max_tokens=512, eval_batch_size=4)
    assert evals.key() == {"eval_seq_len": 64, "eval_max_tokens": 512, "eval_batch_size": 4}
    assert load("default")[0] == TRSPConfig()  # the default profile is the dataclass defaults


def test_every_profile_keeps_the_evaluation_keys_of_its_committed_results():
    """Result keys record every evaluation setting: each profile names all three (EvalSettings' defaults never
    leak in)."""
    for name, prof in PROFILES.items():
        assert load(name)[1].key() == {k: prof[k] for k in ("eval_seq_len", "eval_max_tokens", "eval_batch_size")}


def test_bad_names_fail_with_the_choices():
    with pytest.raises(ValueError, match="unknown profile 'fast'; choose one of"):
        load("fast")
    with pytest.raises(ValueError, match=r"unknown TRSP parameter\(s\) \['lamda1'\]"):
        load("default", lamda1=0.1)


def test_the_old_paper_profile_name_says_its_new_name():
    """`paper` became `paper-scale` (it is the paper's scale, not its method): one line naming the new name."""
    with pytest.raises(ValueError, match="profile 'paper' is now called 'paper-scale'") as err:
        load("paper")
    assert "\n" not in str(err.value)
    cfg, evals = load("paper-scale")
    assert (cfg.n_samples, cfg.seq_len, cfg.gate, cfg.stage2_fade) == (128, 2048, "branch", True)
    assert evals.eval_seq_len == 2048
