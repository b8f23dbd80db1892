"""trsp_lib: TRSP layer pruning (two-stage regularization-based structured pruning) and the protocol to compare it.

- `surgery/`: per-architecture adapters, gates, layer removal, devices, the FSDP glue;
- `method/`: TRSP's losses, its configuration, the shared trainer and the two-stage loop;
- `baselines/`: the selection criteria TRSP is compared with and the `lin` compensation;
- the protocol, here: `data` (calibration and evaluation text), `models` (built-in and local models), `tiny`
  (tiny random models), `evaluation` (perplexity), `zeroshot` (lm-eval; `scoring`, its
  engine that shares each item's context), `speed`, `pipelines` (the registry of
  selection + edits + healing), `compare` (every pipeline under one protocol), `results` (the one cache),
  `provenance`, `profiles` (named parameter sets), `log` (the quiet switch) and `cli` (`trsp prune|eval|speed|compare`).

The study's book code lives apart, in the `study` package; nothing here imports it.
"""
__version__ = "0.2.0"
