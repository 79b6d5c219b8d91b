"""The study: one file (`tapeout-study/1`) that asks whether to build our own chips, and its
result, drawn as one HTML page by `tapeout.report` (`tapeout study`, docs/study.md).

>>> from tapeout.study import load_study
>>> load_study().baseline
'h20'
"""

from tapeout.study.result import StudyResult
from tapeout.study.run import run_study
from tapeout.study.schema import SCHEMA, Study, load_study, parse_study

__all__ = ["SCHEMA", "Study", "StudyResult", "load_study", "parse_study", "run_study"]
