# Build entry point (GNU make). See README.md.
#
#   make all                   (default) venv + install, check the data, run the four parts,
#                              build report/report.pdf, and the zip when PENN_KEY is given
#   make all PENN_KEY=abc123   ... and 1_abc123.zip
#   make test                  install, then `ruff check .` and `pytest` (what CI runs)
#   make zip PENN_KEY=abc123   the submission zip (builds whatever is out of date first)
#   make bench                 the speed benchmarks in benchmarks/
#   make clean                 remove generated outputs (figures, report PDF, zips, build/)
#
# Knobs: DATA=path (dataset folder, default data), SEEDS2=100 (part 2 seeds), SEEDS3=20 (part 3
# seeds), SWEEP_SEEDS=20 and LRS=... (part 2's learning-rate sweep), HOLDOUT=16 (3.1's held-out
# images), and for the report's title block NAME='Your Name', PENN_KEY=yourkey, COLLABORATORS='A, B'.
# Every step's target is a real file, so re-running after a change redoes only what changed: a part
# reruns when its script, a script it imports, its data (by content, see tools/check_data.py) or its
# arguments change, or when its last run did not finish; the PDF when its source or any part's
# results change. Without make (Windows): README.md, "Windows and macOS".

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
# A target whose recipe fails is deleted, so a half-made one never looks up to date. Finished work
# is exempt: see "Finished work stays" below.
.DELETE_ON_ERROR:
.SUFFIXES:
.DEFAULT_GOAL := all

VENV ?= .venv
PY := $(VENV)/bin/python
BOOT_PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null || true)
INSTALLED := $(VENV)/.installed

DATA ?= data
SEEDS2 ?= 100
SEEDS3 ?= 20
SWEEP_SEEDS ?= 20
LRS ?= 0.01,0.03,0.1,0.3,1,3,10,30,100
HOLDOUT ?= 16
PENN_KEY ?=

# Values reach the scripts as given: spaces, quotes and `$` included (DATA='/path/my data',
# NAME='Jo$hn'). $(value X) is X's text before make expands it (make would read `$h` in `Jo$hn` as
# a variable), and it is kept as is (:= does not expand again). Recipes use the text only through
# the environment ("$$PENN_KEY") or quoted for the shell by shq, never as bare shell words.
override DATA := $(value DATA)
override PENN_KEY := $(value PENN_KEY)
export PENN_KEY
# shq: $(1) as one single-quoted shell word ('\'' for each ' inside).
shq = '$(subst ','\'',$(1))'

FIG := figures
BUILD := build
PARTS := part1_loss_gradient part2_fc part3_line part3_detection
RESULTS := $(PARTS:%=$(FIG)/%.json)
# $(BUILD)/ran-<part>: touched when the part's script has finished (see "Finished work stays").
RAN := $(PARTS:%=$(BUILD)/ran-%)
DATA_STAMPS := $(BUILD)/data-random.json $(BUILD)/data-line.json $(BUILD)/data-detection.json
REPORT_SOURCES := report/report.typ $(filter-out report/report.typ,$(wildcard report/*.typ))

# Each script's arguments, as shell words (each value quoted); a change of these (e.g. SEEDS2=200)
# reruns that script.
ARGS_part1 := --out $(FIG)
ARGS_part2 := --data-dir $(call shq,$(DATA)) --out $(FIG) --seeds $(call shq,$(SEEDS2)) \
              --lrs $(call shq,$(LRS)) --sweep-seeds $(call shq,$(SWEEP_SEEDS)) --control-half-lr --control-slope \
              --control-past-cap 3
ARGS_part3_line := --data-dir $(call shq,$(DATA)) --out $(FIG) --seeds $(call shq,$(SEEDS3)) \
                   --holdout $(call shq,$(HOLDOUT)) --control-fc --control-half-lr
ARGS_part3_detection := --data-dir $(call shq,$(DATA)) --out $(FIG) --seeds $(call shq,$(SEEDS3)) \
                        --control-no-width-head --control-width-lr-x10 --control-frozen-features \
                        --control-confusable

.PHONY: all main install check-data check-penn-key require-penn-key test lint bench zip clean distclean help FORCE

## all: the main job, timed (wall time printed at the end). make times it itself, with no shell
## between it and the work: `time $(MAKE) main` put a bash there, which a SIGTERM to make alone
## (make passes SIGTERM to its children) killed at once, leaving the inner make and its script
## running on. date +%s.%N gives whole seconds where %N is unknown (macOS): awk reads "123.N" as 123.
ifneq ($(filter all,$(or $(MAKECMDGOALS),all)),)
ALL_START := $(shell date +%s.%N)
endif
all: main
	@awk -v t0='$(ALL_START)' -v t1="$$(date +%s.%N)" 'BEGIN { printf "make all: wall time %.1f s\n", t1 - t0 }'

main: check-penn-key $(INSTALLED) $(DATA_STAMPS) $(RAN) report/report.pdf
	@if [ -n "$${PENN_KEY-}" ]; then \
	    $(PY) tools/make_zip.py --penn-key="$$PENN_KEY"; \
	else \
	    echo "report: report/report.pdf. For the submission zip: make zip PENN_KEY=yourkey"; \
	fi

# --- environment -----------------------------------------------------------------------------

$(PY):
	@if [ -z "$(BOOT_PYTHON)" ]; then echo "make: need python3.11 (or python3) on PATH" >&2; exit 1; fi
	@echo "creating $(VENV) with $(BOOT_PYTHON) ($$($(BOOT_PYTHON) --version))"
	$(BOOT_PYTHON) -m venv $(VENV)

# Stamp file: pip runs again only when a requirements file changes (or the venv is new).
$(INSTALLED): requirements.txt requirements-dev.txt | $(PY)
	@echo "installing requirements-dev.txt into $(VENV)"
	$(PY) -m pip install --disable-pip-version-check --no-input --quiet -r requirements-dev.txt
	@touch $@

install: $(INSTALLED)

# --- data ------------------------------------------------------------------------------------

# Runs on every make (a fraction of a second when the data is unchanged): validates the three
# datasets and rewrites a dataset's stamp only when its content, provenance or folder changed;
# make re-reads the stamps' times afterwards, so only the parts whose data changed rerun.
# (A pattern rule with several targets runs its recipe once for all of them, in any GNU make.)
$(BUILD)/data-random.% $(BUILD)/data-line.% $(BUILD)/data-detection.%: FORCE | $(INSTALLED)
	$(PY) tools/check_data.py --data-dir $(call shq,$(DATA)) --stamps $(BUILD)

check-data: $(DATA_STAMPS)

# Stamps are written whole (atomically) or not at all: never delete them when a recipe fails.
.PRECIOUS: $(DATA_STAMPS) $(BUILD)/args-%.txt

# $(BUILD)/args-<part>.txt holds a script's arguments, one a line as the script receives them,
# rewritten only when they change.
$(BUILD)/args-%.txt: FORCE
	@mkdir -p $(BUILD)
	@if ! printf '%s\n' $(ARGS_$*) | cmp -s - $@; then printf '%s\n' $(ARGS_$*) > $@; fi

# --- the four parts ----------------------------------------------------------------------------

# Finished work stays. The scripts, build_report.py and make_zip.py write every output whole (a
# temporary renamed into place), so whatever they leave on disk is complete. make, though, deletes
# the target of a recipe that fails (.DELETE_ON_ERROR) or is interrupted (Ctrl-C, SIGTERM, SIGHUP:
# make does that even without .DELETE_ON_ERROR) once the recipe has touched it: a script stopped
# while drawing its figures lost the results JSON it had just written. So the results JSON files
# are not make's targets. A part's target is $(BUILD)/ran-<part>, touched only once its script
# has finished: a part stopped midway reruns at the next make (its JSON, written before the
# figures, is kept meanwhile), and a part whose JSON is gone reruns too. The PDF is .PRECIOUS:
# build_report.py writes it last, whole. (It also depends on the results files themselves, so
# results from a script run by hand are built into it too, and the zip's check that the PDF is
# newer than them can be met.)
.PRECIOUS: report/report.pdf
rerun_if_missing = $(if $(wildcard $(1)),,FORCE)

$(BUILD)/ran-part1_loss_gradient: part1_loss_gradient.py $(call rerun_if_missing,$(FIG)/part1_loss_gradient.json) \
                                  | $(INSTALLED)
	$(PY) part1_loss_gradient.py $(ARGS_part1)
	@mkdir -p $(BUILD) && touch $@

$(BUILD)/ran-part2_fc: part2_fc.py $(BUILD)/data-random.json $(BUILD)/args-part2.txt \
                       $(call rerun_if_missing,$(FIG)/part2_fc.json) | $(INSTALLED)
	$(PY) part2_fc.py $(ARGS_part2)
	@touch $@

# 3.1 reads the random dataset too: its rescaled control takes part 2's input scale from it.
$(BUILD)/ran-part3_line: part3_line.py part2_fc.py $(BUILD)/data-line.json $(BUILD)/data-random.json \
                         $(BUILD)/args-part3_line.txt $(call rerun_if_missing,$(FIG)/part3_line.json) \
                         | $(INSTALLED)
	$(PY) part3_line.py $(ARGS_part3_line)
	@touch $@

$(BUILD)/ran-part3_detection: part3_detection.py part3_line.py part2_fc.py \
                              $(BUILD)/data-detection.json $(BUILD)/args-part3_detection.txt \
                              $(call rerun_if_missing,$(FIG)/part3_detection.json) | $(INSTALLED)
	$(PY) part3_detection.py $(ARGS_part3_detection)
	@touch $@

# --- report and zip ----------------------------------------------------------------------------

# The title block: make all NAME="Your Name" PENN_KEY=yourkey COLLABORATORS="A. B, C. D" (at most
# two; "none" if none). Unset, the PDF shows a marked placeholder. NAME is taken from the command
# line only: some systems (WSL) set NAME to the machine's name in the environment.
override NAME := $(if $(filter command line,$(origin NAME)),$(value NAME),)
COLLABORATORS ?=
override COLLABORATORS := $(value COLLABORATORS)
export NAME COLLABORATORS

# $(BUILD)/args-report.txt holds the title block's inputs, rewritten only when they change, so a new
# name rebuilds the PDF and nothing else.
$(BUILD)/args-report.txt: FORCE
	@mkdir -p $(BUILD)
	@if ! printf '%s\n' "$$NAME" "$$PENN_KEY" "$$COLLABORATORS" | cmp -s - $@; then \
	    printf '%s\n' "$$NAME" "$$PENN_KEY" "$$COLLABORATORS" > $@; fi

# tools/build_report.py compiles to a temporary file in report/ and renames it into place. The PDF
# carries no date (same results, same bytes) unless SOURCE_DATE_EPOCH is set.
report/report.pdf: $(REPORT_SOURCES) $(RAN) $(wildcard $(RESULTS)) tools/build_report.py $(BUILD)/args-report.txt \
                   | $(INSTALLED)
	$(PY) tools/build_report.py --name="$$NAME" --penn-key="$$PENN_KEY" \
	    --collaborators="$$COLLABORATORS" report/report.typ $@

# The key is checked before the long build, so a typo fails at once.
check-penn-key: | $(INSTALLED)
	@if [ -n "$${PENN_KEY-}" ]; then $(PY) tools/make_zip.py --check-key --penn-key="$$PENN_KEY"; fi

require-penn-key:
	@if [ -z "$${PENN_KEY-}" ]; then echo "make zip: give your PennKey: make zip PENN_KEY=yourkey" >&2; exit 2; fi

zip: require-penn-key check-penn-key report/report.pdf | $(INSTALLED)
	$(PY) tools/make_zip.py --penn-key="$$PENN_KEY"

# --- checks ------------------------------------------------------------------------------------

lint: $(INSTALLED)
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest

bench: $(INSTALLED)
	$(PY) benchmarks/bench_part2.py
	$(PY) benchmarks/bench_part3.py
	$(PY) benchmarks/bench_single_run.py

# --- housekeeping ------------------------------------------------------------------------------

clean:
	rm -f $(FIG)/*.png $(FIG)/*.json $(FIG)/.*.png $(FIG)/.*.json $(FIG)/.*.tmp-*
	rm -f report/report.pdf report/.report.*.pdf* 1_*.zip .1_*.zip*
	rm -rf $(BUILD)

distclean: clean
	rm -rf $(VENV) .pytest_cache .ruff_cache

help:
	@sed -n '3,17s/^# \{0,1\}//p' Makefile

FORCE:
