"""The one exception type the CLI turns into a single red line."""


class SenaError(Exception):
    """A problem the user can fix: the message names the file or parameter and the fix."""
