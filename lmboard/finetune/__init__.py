"""Supervised fine-tuning with LoRA: data (data.py), templates (templates.py), tokens and
loss masks (masking.py), training on transformers' Trainer (train.py), and what a
trained adapter records about itself (provenance.py)."""
