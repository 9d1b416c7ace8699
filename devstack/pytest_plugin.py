"""pytest fixtures that start the local platform (registered as a pytest11 plugin)."""
