"""Training code for Sandstorm's built-in model (Qt-free).

``python -m desktop.training --out models/builtin`` trains everything from scratch on the
CPU; ``python -m desktop.training.evaluate`` scores a trained model on held-out prompts.
"""
