"""The exceptions minilrp raises: every bad input gets one that names the problem."""


class MinilrpError(ValueError):
    """Bad input to minilrp: a shape, dtype, value or name that cannot be used."""


class WeightFileError(MinilrpError):
    """A weight file that cannot be loaded: not an npz, truncated, pickled, mismatched."""
