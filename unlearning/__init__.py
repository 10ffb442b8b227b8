"""Record store, partitioning, LoRA training engine, unlearning methods and evaluation.

Importing the package is cheap: torch, transformers and peft are imported only by the
modules that train or score (`models`, `engine`, `training`, `inference`, `evaluation`).
"""
