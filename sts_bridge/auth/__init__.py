"""Hand-written auth layer."""
