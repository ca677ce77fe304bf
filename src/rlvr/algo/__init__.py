"""Pure tensor functions of the algorithm: advantages, policy losses, their metrics, log-probs, schedules.

Nothing here imports the rest of the package: every function takes tensors and plain options.
"""
