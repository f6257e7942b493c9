"""The one exception type for user errors (bad input, bad parameters)."""


class DeepFaceError(Exception):
    """A problem with the user's input: the message names the file or parameter and the fix.

    The CLI prints it as one line without a traceback (exit code 1); a KFP component lets it fail the task.
    """
