"""Hydra entry points: training and experiments on entropic models (they import entropic, not reverse)."""
