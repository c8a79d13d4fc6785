"""robablate: which of RoBERTa's changes to BERT pretraining matter, with error bars."""

__version__ = "0.1.0"
