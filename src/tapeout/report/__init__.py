"""The HTML report: one self-contained page per study or saved result, with plotly charts inlined.
This package is the one place plotly is imported, and only when a page is written.

>>> from tapeout.report import render_result  # doctest: +SKIP
"""

from tapeout.report.files import write_page
from tapeout.report.results import render_result
from tapeout.report.study import render_study

__all__ = ["render_result", "render_study", "write_page"]
