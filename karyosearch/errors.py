"""The one base class for mistakes a user can make (bad path, bad image, wrong model...).

The command line prints such an error as one line and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class UserError(ValueError):
    """A problem with the user's input, explained in one line."""
