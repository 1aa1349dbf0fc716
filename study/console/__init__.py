"""What a person sees: the live console of a study (plan, trial lines, tables, errors) and where library logs go."""


def __getattr__(name: str):
    """Old pickles name `study.console.X` from before this path became a package; kd-study's own code imports the modules."""
    from study.moved import PACKAGES
    from trainables.moved import moved_attr

    return moved_attr(__name__, name, PACKAGES)
