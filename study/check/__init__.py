"""`kd-study check`: what the trials of a space would actually do, derived per dimension."""


def __getattr__(name: str):
    """Old pickles name `study.check.dimensions.X` from before this path became a package; kd-study's own code imports the modules."""
    from study.moved import PACKAGES
    from trainables.moved import moved_attr

    return moved_attr(__name__, name, PACKAGES)
