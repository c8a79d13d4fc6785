"""GLUE end to end: the task table and readers (tasks, hub, synthetic_tasks) -> token ids (encoding) ->
fine-tuning (finetune) -> metrics and the GLUE score (metrics) -> the read-out (readout, registry `glue`)."""
