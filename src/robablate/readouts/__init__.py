"""Read-outs: functions that take a trained encoder and return metrics for results.json.

Each read-out is one module with the same two entry points, so the pipeline can run any of them:

    check(section)                         -> None   config + input files, before any compute
                                                      (ConfigError / DataError naming the key or file)
    evaluate(model, tokenizer, section)    -> dict   the read-out's results.json section

`section` is the read-out's own config section as a plain dict (the pipeline converts `eval.blimp`,
`glue`); `model` is the native `robablate.models.bert.BertForPretraining` (a transformers masked LM
also works where a read-out says so); `tokenizer` is the run's Hugging Face tokenizer. Read-outs
here: `blimp` (zero-shot minimal pairs scored by pseudo-log-likelihood) and `glue` (fine-tuning on
GLUE tasks x seeds x grid; it trains, so its entry points also take the run's Plan and folders:
`check_glue_config`/`check_glue_files` before any compute, `finetune_all(section, plan, run_dir,
hf_dir, tokenizer)` for results["glue"]).
"""
