"""Data pipeline: corpus -> tokenizer -> token cache -> formats -> batching -> masking (and GLUE)."""
