class DataError(ValueError):
    """A problem with a data set file; the message names the file."""
