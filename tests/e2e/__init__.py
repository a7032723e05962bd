"""Whole runs: CLI, API and one-image command on generated data with oracle or random-weight networks."""
