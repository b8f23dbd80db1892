"""study: the book's code, apart from the library. The notebooks, tools and tests import it; `trsp_lib`
never does, and a user who only prunes a model never installs it (`pip install -e study`).

- `evidence`: the declared TRSP search, the main rows over three seeds, the claims they decide;
- `frontier`: the 2025-26 pipelines chapter's searches and rows; `frontier_table` reads them (table, cost, verdicts);
- `analysis`: statistics (bootstrap, seed rule, tie rule) and the paper's own numbers;
- `chapter`: every chapter's closing block (rerun command, measured cost); `scaling`: the memory arithmetic
  of the scaling chapter; `style`: the one plotting and table style.
"""
from trsp_lib import results as _results

#: Every result record this process used, by path (cached or just computed): the chapter footers sum their
#: measured wall times (`chapter.measured_cost`). Registered when any part of `study` is first imported.
USED: dict[str, dict] = {}
_results.LISTENERS.append(lambda path, record: USED.__setitem__(str(path), record))
