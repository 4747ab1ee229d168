"""The training tool's own error: flags that do not fit together (the CLI prints it as one line, exit 2)."""


class UsageError(ValueError):
    """Flags that do not fit together; the message says what to pass instead."""
