# Two commands do all the set-up on a fresh machine:
#   make run    install, then run the default pipeline on the embedded synthetic data
#   make test   install, then run the test suite, then the local SLURM cluster tests (what .ci/run calls)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run smoke test test-slurm slurm bench bench-table1 study clean

install: $(STAMP)

# torch==2.13.0 first: it is the CPU build on this machine's disk; the project's range then accepts it
# instead of pulling a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

run: install
	$(PY) run.py $(ARGS)

smoke: install
	$(PY) run.py experiment=smoke $(ARGS)

# pytest exits 5 when it collects no test: make treats that as a failure too. TEST_WORKERS pytest-xdist
# workers (one thread each, tests/conftest.py; --dist loadfile keeps a module's fixtures on one worker;
# TEST_WORKERS=0 runs serially). Without ARGS the SLURM tests follow (a local one-node cluster, ~2.5 min;
# skipped with the reason where SLURM cannot be installed).
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -m "not slurm" -n $(TEST_WORKERS) --dist loadfile $(ARGS)
ifeq ($(ARGS),)
	$(MAKE) --no-print-directory test-slurm
endif

# Debian's slurm-wlm 22.05 + munge when missing (root + apt-get; CI=true makes "cannot" an error).
slurm:
	bash tests/slurm/install.sh

test-slurm: install slurm
	$(PY) -m pytest -q -m slurm tests/slurm

bench: install
	$(PY) experiments/bench_masking.py
	$(PY) experiments/bench_pretrain.py
	$(PY) experiments/bench_preprocess.py
	$(PY) experiments/bench_startup.py

# Study v2's Table 1 sweep (6 runs + 3 control runs) at two revisions: wall time and identical results
# (experiments/bench_table1.py; ~30 min per side on 2 quiet cores). AFTER defaults to HEAD; *_ARGS are
# extra run.py -m arguments for a side, e.g. AFTER_ARGS='hydra/launcher=local'.
#   make bench-table1 BEFORE=<rev> [AFTER=<rev>] [BEFORE_ARGS='...'] [AFTER_ARGS='...']
AFTER ?= HEAD
bench-table1: install
	@test -n "$(BEFORE)" || { echo "make bench-table1: set BEFORE=<git revision> (AFTER defaults to HEAD)"; exit 2; }
	$(PY) experiments/bench_table1.py --before "$(BEFORE)" --after "$(AFTER)" \
		--before-args "$(BEFORE_ARGS)" --after-args "$(AFTER_ARGS)"

# The WikiText-2 CPU study v2 (experiments/wikitext2_cpu_v2/README.md): pilot, three sweeps and their
# random-init controls, then the reports; about 2 h on 2 cores.
study: install
	PATH=$(VENV)/bin:$$PATH bash experiments/wikitext2_cpu_v2/run_all.sh

clean:
	rm -rf outputs .cache .pytest_cache
