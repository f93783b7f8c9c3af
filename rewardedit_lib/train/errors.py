"""The trainer's errors. Each message says what to do next: lower the learning rate, add the rewards file,
resume from another checkpoint, run the same cell again."""


class TrainingError(RuntimeError):
    """A run cannot go on (bad config, non-finite loss, nothing to resume); the message says what to do."""


class TimeLimitReached(TrainingError):
    """:func:`~rewardedit_lib.train.runs.ensure_trained` stopped a run at its time limit: the checkpoint is saved, and the same call
    again resumes it. Raised, not returned, so a notebook never goes on to evaluate a half-trained model."""
