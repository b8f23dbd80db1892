"""The speed chapter's runs: dense against the same model with layers removed, at several ratios, cached."""
from __future__ import annotations

import copy


def speed_by_ratio(model: str, ratios: list[float], device: str = "cpu", seed: int = 0, cached_only: bool = False,
                   **protocol) -> dict[float, dict]:
    """Dense against the same model with `layers_to_remove(ratio)` layers removed, per ratio, cached.

    The layers are the reverse-order ones: speed depends on the shape only. `protocol`: prefill_len,
    gen_batch, prompt_len, new_tokens, reps (see `speed.compare_speed`)."""
    from trsp_lib.surgery.adapters import get_layers
    from trsp_lib.baselines.criteria import reverse
    from trsp_lib.models import load_model
    from trsp_lib.surgery.removal import remove_layers
    from trsp_lib.results import cached
    from trsp_lib.speed import compare_speed
    from trsp_lib.method.trsp import layers_to_remove

    loaded: list = []

    def measure(ratio: float) -> dict:
        if not loaded:
            loaded.append(load_model(model, device=device)[0])
        net = loaded[0]
        n = layers_to_remove(ratio, len(get_layers(net)))
        pruned = remove_layers(copy.deepcopy(net), reverse(net, None, n))
        return {"n_removed": n, **compare_speed(net, pruned, seed=seed, **protocol)}

    params = {"model": model, "device": device, **protocol, "seed": seed}
    runs = {r: cached("speed", {**params, "ratio": r}, lambda r=r: measure(r), cached_only=cached_only) for r in ratios}
    return {r: v for r, v in runs.items() if v is not None}  # cached_only: the ratios measured so far
