"""The training loop and what it needs around it: the batched reward stage, checkpoints, metrics, evaluation."""


class TrainingError(RuntimeError):
    """The run cannot go on (it diverged, a reward is not finite): a one-line message saying why and what to change."""
