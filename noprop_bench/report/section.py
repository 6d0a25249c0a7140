"""What a report section returns: its markdown, the tables written beside report.md, and its figures."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Section:
    title: str
    text: str | None = None                     # the markdown body; None: the section has nothing to show
    csvs: dict[str, pd.DataFrame] = field(default_factory=dict)        # file name -> table
    figures: dict[str, tuple[bool, str]] = field(default_factory=dict)  # file name -> (drawn, why not)


@dataclass
class Options:
    sigmas: float = 1.0  # flag |ours - paper| beyond this many combined standard errors
    suffix: str = ""     # appended to plot titles: " (scaled)" when no row ran the paper's protocol
