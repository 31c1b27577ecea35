"""Placeholder replaced by the activations work (issue 3)."""
