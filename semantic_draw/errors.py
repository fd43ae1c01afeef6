"""The one exception type for mistakes a user can make."""


class SemanticDrawError(ValueError):
    """Bad input (scene, mask, palette file, preset, canvas size) or a model that cannot be loaded.

    The message is written for the person who made the mistake: it names the bad field and what would fix it.
    """
