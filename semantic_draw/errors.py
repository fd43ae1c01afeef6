"""The exceptions for mistakes a user can make, one subclass per way a caller reacts to them.

Every message is written for the person who made the mistake: it names the bad field and what would fix it. Catch
``SemanticDrawError`` for all of them; catch a subclass to react to one kind (the app picks its advice by type).
"""


class SemanticDrawError(ValueError):
    """Bad input (scene, mask, palette file, option, canvas size) or a model that cannot be loaded."""


class SceneError(SemanticDrawError):
    """A scene or palette file that cannot be drawn: a bad field, mask, image or file."""


class OptionError(SemanticDrawError):
    """An unknown option, or an option with a value out of its range (sampler, method, guidance, steps...)."""


class LoadError(SemanticDrawError):
    """A model that cannot be loaded: unknown preset, unreachable or unsupported weights, refused files."""


class ResourceError(SemanticDrawError):
    """A request beyond this machine's or server's limits: a canvas too large, memory exhausted."""


class SessionClosedError(SemanticDrawError):
    """A stream session used after it was closed."""
