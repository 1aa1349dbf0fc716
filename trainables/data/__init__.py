"""Data sources: quickstart, beir:<folder>, irds:<id>, all yielding RetrievalData."""
from trainables.data.types import Corpus, DataError, DictCorpus, RetrievalData
