"""The fused sampling step: filters and an exact draw in one kernel launch."""
