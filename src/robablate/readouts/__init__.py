"""Read-outs: code that takes a trained encoder and returns a section of results.json.

Each read-out is one module with the same three entry points, named by its entry in
robablate/registry.py (the only list the pipeline, summaries and report iterate):

    check_config(section)          -> Any    the config section alone, before the run folder exists
    check(section, stage)          -> Any    + its input files, before any compute (ConfigError /
                                              DataError naming the key or file and line); returns
                                              what `run` needs (BLiMP: the pairs, read once)
    run(context)                   -> dict   its results.json section

`section` is the read-out's own config section as a plain dict (`eval.blimp`, `glue`); `context` is a
registry.Context: the section, what `check` returned, the run's Plan and folders, the native
`robablate.models.bert.BertForPretraining` and the run's Hugging Face tokenizer. Read-outs here:
`blimp` (zero-shot minimal pairs scored by pseudo-log-likelihood) and `glue` (fine-tuning on GLUE
tasks x seeds x grid).
"""
