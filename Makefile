# One-command set-up: `make run` evolves a proxy on the Suite-Zero data, `make test` runs the tests.
# Each creates the project venv (.venv) and installs what it needs first.
VENV    ?= .venv
PY      := $(VENV)/bin/python
# A CPU build of torch unless the machine has an NVIDIA GPU (override: make TORCH=torch==X.Y.Z)
TORCH   ?= torch==2.13.0
# Data: --data DATA when set, else $$TENSORGP_DATA, else ../shared/data/suite-zero
DATA    ?=
OUT     ?= runs/latest

.PHONY: run test install bench report clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/tensorgp run $(if $(DATA),--data $(DATA),) --train 'nasbench201/*,nasbench301/*' \
		--test 'transbench101_micro/*' --pop 1000 --gens 50 --seed 0 --out $(OUT)

test: install
	$(PY) -m pytest -q

bench: install
	$(VENV)/bin/tensorgp bench

# Regenerates docs/results.md and docs/figures (about 45 min; cached runs in runs/quality resume)
report: install
	$(PY) -m pip install -q --disable-pip-version-check -e ".[report]"
	$(PY) bench/quality.py --data ../shared/data --out runs/quality --report docs/results.md

clean:
	rm -rf $(VENV) runs .pytest_cache
