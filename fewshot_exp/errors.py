"""The one exception type for a user's mistake: the CLI prints its message on one line and exits 2."""


class UserError(Exception):
    """Bad input (config value, path, episode shape, checkpoint) that the user can fix."""
