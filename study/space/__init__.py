"""A search space: its schema, searched parameters, exact grid, rules, declared contrasts and replicates."""


def __getattr__(name: str):
    """Old pickles name `study.space.schema.X` from before this path became a package; kd-study's own code imports the modules."""
    from study.moved import PACKAGES
    from trainables.moved import moved_attr

    return moved_attr(__name__, name, PACKAGES)
