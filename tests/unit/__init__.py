"""Formula and component tests: known answers on small tensors, loaders against official formats."""
