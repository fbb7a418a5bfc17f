"""Errors that the CLI turns into exit status 2 with a message naming the field."""


class UsageError(ValueError):
    """Bad user input: a config field, a flag, a spec entry. `field` names what to fix."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")
