"""The training engine: configuration, strategies, the loop, the feature cache, jobs, torchrun."""
