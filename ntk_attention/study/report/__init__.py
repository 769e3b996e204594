"""The study's report: sections read out from a run's numbers (`sections`), their figures
(`figures`, drawn with the plotting helpers of `plots`) and the page (`page`: Markdown →
one self-contained HTML file). `build` writes D/report.md and D/report.html."""
from ntk_attention.study.report.sections import *  # noqa: F401,F403  (its __all__)
from ntk_attention.study.report.sections import __all__  # noqa: F401
