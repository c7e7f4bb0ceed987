"""The one exception type for bad input: the CLI prints its messages and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (a spec, a path, a data file); each message names the place."""

    def __init__(self, *messages: str):
        super().__init__("\n".join(messages))
        self.messages = list(messages)
