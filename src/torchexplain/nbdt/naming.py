"""Names for the inner nodes of a class hierarchy.

The default needs nothing but the class names: the longest common prefix of the
leaves' labels when it is a meaningful word part, else the labels in braces, sorted
(``{cat, dog}``; a large node lists its first three and ``+k more``, never ``+1 more``).
:func:`wordnet_namer` names nodes by the lowest common WordNet hypernym, and is available only when nltk and its WordNet
corpus are installed locally: nothing is ever downloaded.
"""

from __future__ import annotations

import os
import re
from typing import Callable

#: how many leaf labels a braced name lists before "+k more" (one more is listed
#: rather than hidden)
SHOWN = 3


def natural_key(label: str) -> list:
    """Sort key putting "class2" before "class10": digit runs compare as numbers."""
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", label) if part
    ]


def _common_prefix(labels: list[str]) -> str:
    prefix = os.path.commonprefix(labels)
    return prefix.rstrip(" _-./:")


def default_namer(labels: list[str]) -> str:
    """``"{a, b}"`` for the labels in natural order (``{2, 3, 10}``), or their common
    prefix when it is at least three characters long and shorter than every label
    (``"dog_husky", "dog_pug"`` -> ``"dog"``). More than ``SHOWN + 1`` labels list the
    first ``SHOWN`` and ``+k more``."""
    prefix = _common_prefix(labels)
    if len(prefix) >= 3 and all(len(prefix) < len(label) for label in labels):
        return prefix
    ordered = sorted(labels, key=natural_key)
    if len(ordered) <= SHOWN + 1:
        return "{" + ", ".join(ordered) + "}"
    return "{" + ", ".join(ordered[:SHOWN]) + f", +{len(ordered) - SHOWN} more" + "}"


def wordnet_namer() -> Callable[[list[str]], str] | None:
    """A namer using the lowest common WordNet hypernym of the labels' first noun
    senses (falling back to :func:`default_namer`), or None when nltk or its WordNet
    corpus is not installed locally."""
    try:
        import nltk
        from nltk.corpus import wordnet
    except ImportError:
        return None
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
        except LookupError:
            return None

    def name(labels: list[str]) -> str:
        synsets = []
        for label in labels:
            found = wordnet.synsets(label.replace(" ", "_"), pos=wordnet.NOUN)
            if not found:
                return default_namer(labels)
            synsets.append(found[0])
        common = synsets[0]
        for s in synsets[1:]:
            shared = common.lowest_common_hypernyms(s)
            if not shared:
                return default_namer(labels)
            common = shared[0]
        return common.lemma_names()[0].replace("_", " ")

    return name
