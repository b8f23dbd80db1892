"""Model surgery: where each architecture keeps its layers (`adapters`, the one table of differences), the
learnable per-layer gates (`gating`), deleting layers so a stock Hugging Face model is left (`removal`),
device helpers (`devices`) and the FSDP glue through accelerate (`distributed`)."""
