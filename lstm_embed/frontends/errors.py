"""The frontends' one error: a model file that cannot be read, in one line naming the file."""


class FrontendError(ValueError):
    """The model cannot be read; the message names the file or layer and what is supported."""
