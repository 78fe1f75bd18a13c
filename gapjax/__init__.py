"""gapjax: pure-functional JAX/Flax reimplementations of "gap" methods.

Shared infrastructure lives in :mod:`gapjax.train`, :mod:`gapjax.parallel`,
:mod:`gapjax.checkpoint`, :mod:`gapjax.data`, :mod:`gapjax.report`; one
subpackage per method (``ghost_bn``, ``flow``, ``scaling``, ``icl``, ``repri``,
``deup``).
"""

__version__ = "0.1.0"
