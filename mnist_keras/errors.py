"""The errors the API raises; each carries the exit code the command line maps it to."""


class Error(Exception):
    """A failure the user can act on; `messages` are printed one per line, `exit_code` ends the command."""

    exit_code = 1

    def __init__(self, *messages: str):
        super().__init__("\n".join(messages))
        self.messages = list(messages)


class UserError(Error):
    """Bad input (a spec, a path, a data file, a run directory); each message names the place. Exit 2."""

    exit_code = 2


class TrainingFailed(Error):
    """Training stopped on its own (a NaN loss, a write that failed); the run is kept and marked failed. Exit 1."""

    exit_code = 1


class Interrupted(Error):
    """Ctrl-C: the last finished epoch is kept and the run is marked interrupted. Exit 130."""

    exit_code = 130


class ExportFailed(Error):
    """An export missed its parity bar or its converter failed; the artifact is moved aside as failed. Exit 1.
    `parity` holds the figures that missed the bar (None when the converter failed)."""

    exit_code = 1

    def __init__(self, *messages: str, parity=None):
        super().__init__(*messages)
        self.parity = parity


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type's name when it has none), at most `limit` characters:
    what a one-line error message quotes of a library's exception."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]
