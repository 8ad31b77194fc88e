"""Data stages: sources -> verify -> preprocess -> split, and the training datasets.

Each stage hands off through files (see docs/contracts.md); none reaches into another's internals.
"""
