"""The one error class of onebyone: bad input, with a message that names what was expected and what was
got (with the shapes). The checks that raise it are in ``checks``."""


class OneByOneError(ValueError):
    """Bad input to onebyone: the message names what was expected and what was got."""
