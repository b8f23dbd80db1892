"""The scaling chapter's arithmetic: parameters of a Llama-style decoder and memory per GPU to train it.

Written from the public config.json fields (the book builds offline); `AutoConfig` objects work as well.
"""
from __future__ import annotations

GB = 1e9

#: The fields `memory_estimate` reads, from the config.json of meta-llama/Llama-2-{7b,13b,70b}-hf
#: (public; the book builds offline, so they are written here; `AutoConfig` objects work as well).
LLAMA2_CONFIGS: dict[str, dict[str, int]] = {
    "meta-llama/Llama-2-7b-hf": {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 32,
                                 "num_hidden_layers": 32, "intermediate_size": 11008, "vocab_size": 32000},
    "meta-llama/Llama-2-13b-hf": {"hidden_size": 5120, "num_attention_heads": 40, "num_key_value_heads": 40,
                                  "num_hidden_layers": 40, "intermediate_size": 13824, "vocab_size": 32000},
    "meta-llama/Llama-2-70b-hf": {"hidden_size": 8192, "num_attention_heads": 64, "num_key_value_heads": 8,
                                  "num_hidden_layers": 80, "intermediate_size": 28672, "vocab_size": 32000},
}


def _dims(config) -> dict[str, int]:
    c = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    get = (lambda k, d=None: c.get(k, d)) if isinstance(c, dict) else (lambda k, d=None: getattr(c, k, d))
    h, heads = get("hidden_size"), get("num_attention_heads")
    head_dim = get("head_dim") or h // heads
    return {"h": h, "L": get("num_hidden_layers"), "i": get("intermediate_size"), "V": get("vocab_size"),
            "q": heads * head_dim, "kv": (get("num_key_value_heads") or heads) * head_dim,
            "tied": bool(get("tie_word_embeddings", False))}


def n_params(config) -> dict[str, int]:
    """Parameters of a Llama-style decoder: total and per decoder layer (q, k, v, o, gate/up/down, 2 norms)."""
    d = _dims(config)
    layer = d["h"] * (2 * d["q"] + 2 * d["kv"]) + 3 * d["h"] * d["i"] + 2 * d["h"]
    embed = d["V"] * d["h"] * (1 if d["tied"] else 2)
    return {"total": embed + d["L"] * layer + d["h"], "layer": layer}


def memory_estimate(config, n_gpus: int = 1, micro_batch: int = 1, seq_len: int = 2048, master_bytes: int | None = None,
                    checkpointing: bool = False) -> dict[str, float]:
    """GB per GPU to train every weight with AdamW, as trsp does in stage 2 and the fine-tune.

    `master_bytes` per trained weight (gradients and each AdamW moment take the same): 2 on one GPU
    (trsp trains the bf16 model as loaded), 4 under FSDP (accelerate's mixed precision bf16 keeps
    fp32 master weights); FSDP divides weights, gradients and moments by `n_gpus` and adds the bf16
    copies of the two layers gathered at a time. trsp's glue also keeps the plain bf16 model each
    process evaluates and removes layers from (`plain_copy`: on the GPU with --device cuda, in CPU
    RAM with --device cpu; not in `total`). Activations, bf16, flash attention, per token and layer:
    norm inputs and outputs, q, k, v, attention output, gate, up, SiLU(gate) and their product
    (4h + q + 2kv + 4i values); with `checkpointing` only each layer's input plus one layer's set.
    Plus fp32 logits and their gradient. `micro_batch`: sequences per GPU per micro-batch.
    """
    d, p = _dims(config), n_params(config)
    n, master = p["total"], master_bytes or (2 if n_gpus == 1 else 4)
    gathered = 0 if n_gpus == 1 else 2 * 2 * p["layer"]
    tokens = micro_batch * seq_len
    per_layer = tokens * (4 * d["h"] + d["q"] + 2 * d["kv"] + 4 * d["i"]) * 2
    acts = (tokens * d["L"] * d["h"] * 2 + per_layer) if checkpointing else d["L"] * per_layer
    out = {"params_b": n / 1e9, "weights": (master * n / n_gpus + gathered) / GB, "gradients": master * n / n_gpus / GB,
           "optimizer": 2 * master * n / n_gpus / GB, "activations": (acts + tokens * d["V"] * 4 * 2) / GB,
           "plain_copy": (0 if n_gpus == 1 else 2 * n) / GB}
    out["total"] = out["weights"] + out["gradients"] + out["optimizer"] + out["activations"]
    return out


L7, L13, L70 = (f"meta-llama/Llama-2-{s}-hf" for s in ("7b", "13b", "70b"))
#: The settings of the memory table: (setting, short label, model, GPUs, sequences per GPU per micro-batch,
#: master bytes, activation checkpointing, plain bf16 copies besides the training state, where they sit).
SETTINGS = [
    ("7B prune, 1 GPU, paper-scale profile (micro-batch 8)", "7B prune, 1 GPU, micro-batch 8", L7, 1, 8, None, False,
     0, "GPU"),
    ("7B prune, 1 GPU, --batch-size 1 --grad-accum 8", "7B prune, 1 GPU, micro-batch 1", L7, 1, 1, None, False, 0,
     "GPU"),
    ("7B compare, 1 GPU, --batch-size 1 --grad-accum 8", "7B compare, 1 GPU", L7, 1, 1, None, False, 1, "GPU"),
    ("13B prune --no-baselines, fsdp_gpu8", "13B prune, 8 GPUs", L13, 8, 1, None, False, 1, "GPU"),
    ("13B compare, fsdp_gpu8", "13B compare, 8 GPUs", L13, 8, 1, None, False, 2, "GPU"),
    ("70B prune --no-baselines, fsdp_gpu8, --device cpu", "70B prune, 8 GPUs", L70, 8, 1, None, False, 1, "CPU"),
    ("70B prune --no-baselines, fsdp_gpu8_70b, --device cpu", "70B prune, 8 GPUs, bf16 + ckpt", L70, 8, 1, 2, True, 1,
     "CPU"),
]
#: Memory of one GPU of each kind the table compares against (GB).
GPU_GB = {"H100": 80, "H200": 141}


def memory_table(settings: list[tuple] = SETTINGS, seq_len: int = 2048):
    """GB per GPU of each setting: the training state by part, the plain bf16 copies and where they sit, and the
    total on the GPU (`on GPU`: the copies count only where they sit on the GPU)."""
    import pandas as pd

    rows = []
    for label, short, name, gpus, micro, master, ckpt, copies, where in settings:
        m = memory_estimate(LLAMA2_CONFIGS[name], n_gpus=gpus, micro_batch=micro, seq_len=seq_len,
                            master_bytes=master, checkpointing=ckpt)
        plain = copies * 2 * m["params_b"]  # bf16 bytes per parameter, in GB
        rows.append({"setting": label, "short": short, "gpus": gpus, "params_b": m["params_b"], "weights": m["weights"],
                     "gradients": m["gradients"], "AdamW moments": m["optimizer"], "activations": m["activations"],
                     "training state": m["total"], "plain copies": plain, "copies in": where if copies else "-",
                     "on GPU": m["total"] + (plain if where == "GPU" else 0.0)})
    return pd.DataFrame(rows)


def memory_figure(mem):
    """Stacked bars of each setting's memory per GPU, with the memory of an 80 GB and a 141 GB GPU."""
    import matplotlib.pyplot as plt
    import numpy as np

    from .style import figsize, reference_line

    fig, ax = plt.subplots(figsize=figsize(0.55), layout="constrained")
    left = np.zeros(len(mem))
    on_gpu = np.where(mem["copies in"] == "GPU", mem["plain copies"], 0.0)
    for i, (part, values) in enumerate([(p, mem[p].to_numpy()) for p in ("weights", "gradients", "AdamW moments",
                                                                          "activations")]
                                       + [("plain bf16 copies on the GPU", on_gpu)]):
        ax.barh(mem["short"], values, left=left, color=f"C{i}", label=part)
        left += values
    for name, gb in GPU_GB.items():
        reference_line(ax, gb, f"{gb} GB ({name})", vertical=True)
    ax.invert_yaxis()
    ax.set_xlim(0, mem["on GPU"].max() * 1.04)
    ax.set_xlabel("memory per GPU (GB), sequences of 2048 tokens")
    fig.legend(loc="outside lower center", ncol=3)
    return fig


def gpu_records(directory=None) -> dict:
    """The cached results computed on a GPU (`provenance.cuda`): how many, on which device, the sum of their
    recorded wall times (processes sharing the GPU each count theirs) and the wall-clock span from the first
    start to the last finish, in minutes."""
    import json
    from datetime import datetime, timedelta
    from pathlib import Path

    from trsp_lib.results import results_dir

    found = []
    for path in sorted(Path(directory or results_dir()).rglob("*.json")):
        record = json.loads(path.read_text())
        cuda = (record.get("provenance") or {}).get("cuda") if isinstance(record, dict) else None
        if cuda and record.get("wall_s") is not None:
            end = datetime.strptime(record["provenance"]["date"], "%Y-%m-%dT%H:%M:%S%z")
            found.append((cuda, record["wall_s"], end - timedelta(seconds=record["wall_s"]), end))
    if not found:
        return {"gpu_rows": 0, "gpu_device": "no GPU", "gpu_wall_min": 0.0, "gpu_span_min": 0.0}
    return {"gpu_rows": len(found), "gpu_device": ", ".join(sorted({f[0] for f in found})),
            "gpu_wall_min": sum(f[1] for f in found) / 60,
            "gpu_span_min": (max(f[3] for f in found) - min(f[2] for f in found)).total_seconds() / 60}


def papermill_command(notebook: str, model: str, **params) -> str:
    """The papermill command that runs `notebook` with `params` (and `model`) as one YAML mapping; a parameter
    the notebook's `parameters` cell lacks is an error, so a printed command cannot name one."""
    import json
    import shlex
    from pathlib import Path

    import papermill as pm

    path = Path(__file__).resolve().parents[1] / "notebooks" / f"{notebook}.ipynb"
    unknown = sorted({"model", *params} - set(pm.inspect_notebook(str(path))))
    if unknown:
        raise ValueError(f"notebooks/{notebook}.ipynb has no parameter(s) {unknown}")
    return (f"HF_HUB_OFFLINE=0 papermill notebooks/{notebook}.ipynb out/{notebook}-{model.split('/')[-1]}.ipynb "
            f"-y {shlex.quote(json.dumps({'model': model, **params}))}")


def one_gpu_commands(model: str, ratio: float, profile: str, device: str, seed: int, limit: int | None, calib: str,
                     eval_texts: dict[str, str]) -> list[str]:
    """Every chapter at the paper's scale on one GPU (full zero-shot sets, the criteria on every calibration row,
    one model), then the same through the CLI with micro-batches of one sequence (an 80 GB GPU)."""
    study = {"device": device, "profile": profile, "seed": seed, "limit": limit, "main_limit": limit,
             "criterion_samples": 128, "second_model": None}
    common = {"ratio": ratio, "calib": calib, "eval_texts": eval_texts, "study": study}
    speed = {"device": device, "seed": seed, "speed": {"prefill_len": 2048, "gen_batch": 64, "prompt_len": 64,
                                                        "new_tokens": 128, "reps": 5}}
    chapters = [papermill_command(nb, model, **common) for nb in ("02_trsp", "03_importance", "04_baselines",
                                                                   "05_ablations")]
    chapters += [papermill_command("06_speed", model, study=speed)]
    chapters += [papermill_command(nb, model, **common) for nb in ("07_paper_and_us", "09_instead")]
    name, texts = model.split("/")[-1], " ".join(f"--text {k}={v}" for k, v in eval_texts.items())
    flags = f"--profile {profile} --device {device} --batch-size 1 --grad-accum 8 --calib {calib} {texts}"
    return ["mkdir -p out", *chapters, "", "# or the CLI, on an 80 GB GPU:",
            f"HF_HUB_OFFLINE=0 trsp prune --model {model} --ratio {ratio} {flags} --out runs/{name}-{ratio}",
            f"HF_HUB_OFFLINE=0 trsp compare --model {model} --ratios {ratio} {flags} --limit -1 "
            f"--criterion-samples 128 --out runs/compare-{name}"]


def fsdp_commands(models: list[str], ratio: float, profile: str, n_gpus: int, calib: str,
                  eval_texts: dict[str, str]) -> list[str]:
    """`trsp prune` (and `compare`) under `accelerate launch` with FSDP on one node of `n_gpus` GPUs; a 70B model
    keeps its plain copy in CPU RAM and is scored from the saved checkpoint."""
    launch = "HF_HUB_OFFLINE=0 accelerate launch --config_file configs/accelerate/fsdp_gpu{}.yaml -m trsp_lib.cli"
    texts = " ".join(f"--text {k}={v}" for k, v in eval_texts.items())
    data = f"--calib {calib} {texts}"
    lines = []
    for big in models:
        short = big.split("/")[-1]
        if "70b" in short.lower():
            lines += [f"# {short}: plain copy in CPU RAM; scores from the saved checkpoint",
                      f"{launch.format(f'{n_gpus}_70b')} prune --model {big} --ratio {ratio} --profile {profile} "
                      f"--device cpu --dtype bfloat16 --no-baselines --eval-max-tokens 4096 {data} "
                      f"--out runs/{short}-{ratio}",
                      f"HF_HUB_OFFLINE=0 trsp eval --model runs/{short}-{ratio}/model --device auto "
                      f"--profile {profile} {texts}"]
        else:
            lines += [f"# {short}: {n_gpus} x 80 GB GPUs",
                      f"{launch.format(n_gpus)} prune --model {big} --ratio {ratio} --profile {profile} "
                      f"--no-baselines {data} --out runs/{short}-{ratio}",
                      f"# ... every method: compare keeps the dense model too, {n_gpus} x 141 GB GPUs (H200)",
                      f"{launch.format(n_gpus)} compare --model {big} --ratios {ratio} --profile {profile} "
                      f"--no-speed --limit -1 --criterion-samples 128 {data} --out runs/compare-{short}"]
    return lines


#: Forward-only tokens of the paper-scale evaluation: about 340k WikiText-2 test tokens and about 6M tokens of
#: the five full zero-shot sets, each scored on the dense and on the pruned model.
EVAL_TOKENS = 2 * (340_000 + 6_000_000)


def paper_estimate(cfg, model: str = L7) -> dict:
    """TRSP on `model` with the profile `cfg` (a TRSPConfig): parameters, trained tokens (rounds x steps per round
    + stage-2 steps, x batch x sequence length), forward-only tokens and GPU hours (`study.chapter.gpu_hours`)."""
    from trsp_lib.method.config import budget
    from trsp_lib.method.trsp import layers_to_remove

    from .chapter import H100_BF16_TFLOPS, MFU, gpu_hours

    layers = LLAMA2_CONFIGS[model]["num_hidden_layers"]
    n = layers_to_remove(cfg.ratio, layers)
    params, trained = n_params(LLAMA2_CONFIGS[model])["total"], budget(cfg, n).tokens
    return {"est_layers": layers, "est_removed": n, "est_params_b": params / 1e9, "est_train_tokens_m": trained / 1e6,
            "est_eval_tokens_m": EVAL_TOKENS / 1e6, "est_gpu_min": 60 * gpu_hours(params, trained, EVAL_TOKENS)[0],
            "est_mfu": MFU, "est_peak_tflops": H100_BF16_TFLOPS}


def memory_values(mem) -> dict:
    """What the chapter states from the memory table, by glue name: GB per GPU of each setting (`mem_<short>`
    with the short label's words joined by _), and the settings that fit each GPU of `GPU_GB`."""
    import re

    out = {"mem_" + re.sub(r"\W+", "_", short).strip("_").lower(): gb for short, gb in zip(mem["short"], mem["on GPU"])}
    small, large = sorted(GPU_GB.values())
    out["fits_small"] = "; ".join(mem["short"][mem["on GPU"] <= small])
    out["fits_large_only"] = "; ".join(mem["short"][(mem["on GPU"] > small) & (mem["on GPU"] <= large)]) or "none"
    out["fits_none"] = "; ".join(mem["short"][mem["on GPU"] > large]) or "none"
    big = mem[mem["short"].str.startswith("70B")].iloc[0]
    out["plain_70b"], out["plain_70b_node_tb"] = big["plain copies"], big["plain copies"] * big["gpus"] / 1000
    return out


def memory_display(mem):
    """The memory table as the chapter shows it: GB by part, the plain copies with where they sit, and whether
    the setting fits each GPU of `GPU_GB`."""
    out = mem[["setting", "weights", "gradients", "AdamW moments", "activations", "training state"]].copy()
    out["plain copies"] = [f"{gb:.0f} ({where})" if where != "-" else "-"
                           for gb, where in zip(mem["plain copies"], mem["copies in"])]
    out[" / ".join(map(str, GPU_GB.values())) + " GB"] = [" / ".join("yes" if gb <= cap else "no"
                                                                      for cap in GPU_GB.values())
                                                           for gb in mem["on GPU"]]
    return out
