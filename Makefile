# opsproof — the two commands a newcomer needs: `make daily` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-stamp
NPMSTAMP:= node_modules/.npm-stamp

.PHONY: setup stack stack-down plane plane-down daily gate drills acceptance cadence-daily cadence-weekly cadence-monthly watch doctor report bench bench-rollups test clean

setup: $(STAMP) $(NPMSTAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# `npm ci` refuses a lock without every platform's optional binary of the Supabase CLI; registries
# that mirror only linux-x64 can't provide those entries, so fall back to `npm install` from the
# same lock (it installs the locked versions and leaves package-lock.json unchanged).
$(NPMSTAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error 2>/dev/null || npm install --no-audit --no-fund --loglevel=error
	test -x node_modules/.bin/supabase && test -x node_modules/.bin/allure && test -f node_modules/uplot/dist/uPlot.iife.min.js
	touch $(NPMSTAMP)

stack: setup
	$(BIN)/opsproof stack up

stack-down: setup
	$(BIN)/opsproof stack down

plane: stack
	$(BIN)/opsproof plane up

plane-down: setup
	$(BIN)/opsproof plane down

# The main job: bring up the embedded default when no target is configured, run the daily suite.
daily: setup
	$(BIN)/opsproof daily

gate: setup
	$(BIN)/pytest -m gate

drills: setup
	$(BIN)/opsproof drills

acceptance: setup
	$(BIN)/opsproof acceptance

cadence-daily cadence-weekly cadence-monthly: plane
	$(BIN)/opsproof cadence $(@:cadence-%=%)

report: setup
	$(BIN)/opsproof evidence report reports/evidence/$$(date -u +%F)

bench: setup
	$(BIN)/python bench/bench_seed.py
	$(BIN)/python bench/bench_plane.py
	$(BIN)/python bench/bench_daily.py

# rollups (issue 13): 1M and 10M requests/24 h side by side; OPSPROOF_BENCH_100M=1 adds 100M (~10+ GB of disk)
bench-rollups: setup
	$(BIN)/python bench/bench_rollups.py

# The project's own tests (engine units, suite-vs-stack, fault injection). Leaves nothing running.
# The green-posture watch (a service: deploy/systemd/opsproof-watch.service); the embedded default ticks every 10 s
watch: plane
	$(BIN)/opsproof watch

doctor: setup
	$(BIN)/opsproof doctor

test: setup
	$(BIN)/pytest tests -p no:randomly -q

clean:
	-$(BIN)/opsproof plane down
	-$(BIN)/opsproof stack down
	rm -rf .opsproof reports
