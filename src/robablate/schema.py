"""The results.json contract shared by its writers (config.py, results.py) and its reader (report/).

Constants only and no imports, so `robablate.report` reads results without torch, Lightning or Hydra.
"""

SCHEMA_VERSION = 1  # results.json["schema_version"]; bump on an incompatible change, the report checks it
# The ablation axes (RoBERTa Tables 1-3; docs/facts.md §1) in table order: results.json["axes"] keys.
AXES = ("masking", "nsp", "format", "batch", "seq_len", "scheduler", "model", "corpus")
