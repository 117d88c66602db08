"""m5bench: a benchmark harness for multimodal e-commerce product pretraining."""

__version__ = "0.1.0"
