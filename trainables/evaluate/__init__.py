"""Evaluating a student: encode, retrieve with faiss, score with ir_measures; reference points."""


def __getattr__(name: str):
    """Old pickles name `trainables.evaluate.evaluation.X` from before this path became a package; kd-study's own code imports the modules."""
    from trainables.moved import PACKAGES
    from trainables.moved import moved_attr

    return moved_attr(__name__, name, PACKAGES)
