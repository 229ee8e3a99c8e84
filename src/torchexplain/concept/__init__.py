"""Concept-based interpretability with Captum's names: TCAV (Kim et al. 2018).

``TCAV(model, layers).interpret(inputs, [[concept, random], ...], target=k)``; see
:mod:`.tcav`. Beyond Captum: ``classifier="fastcav"`` (:class:`FastCAVClassifier`),
scikit-learn-style estimators (:class:`SklearnClassifier`), :meth:`TCAV.significance`
and the t-test it uses (:func:`significance_test`, :func:`ttest_ind`,
:func:`student_t_cdf`).
"""

from .cav import CAV
from .classifier import Classifier, DefaultClassifier
from .concept import Concept, ConceptInterpreter, concepts_to_str
from .fastcav import FastCAVClassifier, SklearnClassifier
from .stats import betainc, significance_test, student_t_cdf, ttest_ind
from .tcav import TCAV

__all__ = [
    "CAV",
    "Concept",
    "ConceptInterpreter",
    "TCAV",
    "Classifier",
    "DefaultClassifier",
    "FastCAVClassifier",
    "SklearnClassifier",
    "concepts_to_str",
    "significance_test",
    "ttest_ind",
    "student_t_cdf",
    "betainc",
]
