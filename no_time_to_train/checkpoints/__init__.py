"""Official checkpoints: the registry of variants, file names and URLs, and strict loaders."""
