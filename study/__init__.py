"""study: the book's code, apart from the library. The notebooks, tools and tests import it; `trsp_lib`
never does, and a user who only prunes a model never installs it (`pip install -e study`).

- `searches`: every declared search (TRSP's knobs, the healing learning rates, `lin`), chosen on validation;
- `evidence`: the main rows over three seeds and the claims they decide; `stats`: the bootstrap, seed and tie rules;
- `frontier`: the 2025-26 pipelines chapter's rows and table; `verdicts`: the sentences computed from rows;
- `paper`: this study against the paper's own numbers; `speed`: the speed chapter's runs; `scaling`: the memory
  arithmetic of the scaling chapter; `chapter`: every chapter's closing block; `style`: the one plot and table style.
"""
from trsp_lib import results as _results

#: Every result record this process used, by path (cached or just computed): the chapter footers sum their
#: measured wall times (`chapter.measured_cost`). Registered when any part of `study` is first imported.
USED: dict[str, dict] = {}
_results.LISTENERS.append(lambda path, record: USED.__setitem__(str(path), record))
