"""Encoders: where weights come from, the student and teacher scorers, sentence-transformers export."""


def __getattr__(name: str):
    """Old pickles name `trainables.models.encoders.X` from before this path became a package; kd-study's own code imports the modules."""
    from trainables.moved import PACKAGES
    from trainables.moved import moved_attr

    return moved_attr(__name__, name, PACKAGES)
