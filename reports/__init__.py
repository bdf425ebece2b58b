"""Loss-rate reports: a run's ``results.jsonl`` → ``report.html``, ``report.md``,
``figures/*.png`` and ``summary.csv`` (see ``docs/reports.md``).

>>> from reports import build_report
>>> build_report("out/quickstart")                      # doctest: +SKIP
"""

from reports.build import FORMATS, build_report
from reports.examples import save_examples

__all__ = ["build_report", "save_examples", "FORMATS"]
