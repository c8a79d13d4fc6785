"""Models: the BERT encoder with its pretraining heads, and Hugging Face export."""
