"""Entropy, varentropy and log-partition of softmax rows."""
