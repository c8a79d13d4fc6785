"""Zero-shot minimal pairs: each suite's reader (blimp_reader, zorro_reader) beside its read-out
(blimp, zorro; registry `blimp`, `zorro`); blimp holds the pseudo-log-likelihood scorer both use."""
