"""One error type for bad user input, shared by every stage's CLI.

A `FaceedgeError` carries a one-line message that names the file, key or value at fault;
CLIs print it as ``error: <message>`` and exit non-zero, without a traceback.
"""


class FaceedgeError(Exception):
    """A user-facing error with a one-line message."""

    exit_code = 2

    def __str__(self) -> str:  # keep it one line whatever was passed in
        return " ".join(str(a) for a in self.args).replace("\n", " ")
