"""The study's page: its name and notes, the headline, then the sections in the order the study
gives them (the answer first)."""

from __future__ import annotations

from tapeout.report.page import Sources, esc, page
from tapeout.study.result import StudyResult


def render_study(result: StudyResult) -> str:
    """The HTML page of a study result."""

    def header(sources: Sources) -> str:
        notes = f'<p class="notes">{esc(result.notes)}</p>' if result.notes else ""
        mark = sources.mark(result.headline.source) if result.headline.source else ""
        return (
            f"<h1>{esc(result.name)}</h1>"
            f'<p class="meta">study {esc(result.origin)}; tapeout {esc(result.version)}; computed in '
            f"{result.seconds:,.1f} s; every number has a numbered source (hover a row or a point)</p>"
            f'<p class="headline">{esc(result.headline.text)}{mark}</p>{notes}'
        )

    return page(result.name, header, result.sections)
