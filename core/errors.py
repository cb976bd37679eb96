"""Errors the command line turns into one clear line and exit status 2."""


class UserError(ValueError):
    """Bad input from a user: a message naming the bad value and what is allowed."""


class NonFiniteError(RuntimeError):
    """A NaN or inf appeared in meta-training; carries the step (counted from 1, as the `step`
    of metrics.jsonl counts steps done) and the quantity that went bad."""

    def __init__(self, step: int, quantity: str, value: float):
        self.step, self.quantity, self.value = step, quantity, value
        super().__init__(f"meta-training stopped at step {step}: {quantity} is {value}")
