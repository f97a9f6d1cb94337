# One-command set-up: `make run` evolves a proxy on the Suite-Zero data, `make test` runs the tests.
# Each creates the project venv (.venv) and installs what it needs first.
VENV    ?= .venv
PY      := $(VENV)/bin/python
# torch version (override: make TORCH=torch==X.Y.Z)
TORCH   ?= torch==2.13.0
# Extra pip options for torch only, e.g. make TORCH_INDEX='--index-url <PyTorch CPU index>' for the
# CPU-only build on a machine without an NVIDIA GPU (a fraction of the CUDA build's size). Empty by
# default: pip's configured indexes (on the project's machines they serve a CPU build of 2.13.0).
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 1)
TORCH_INDEX ?=
# triton (the GPU kernels, about 1 GB): the `gpu` extra, installed for `run` only where a GPU can use
# it; `test` installs the `dev` extra, which has it too (the kernel tests run it interpreted on the CPU)
EXTRAS  := $(if $(HAS_GPU),[gpu],)
# Data: --data DATA when set, else $$TENSORGP_DATA, else ../shared/data/suite-zero
DATA    ?=
OUT     ?= runs/latest

.PHONY: run test install install-dev bench report clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_INDEX) "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".$(EXTRAS)"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(VENV)/bin/tensorgp run $(if $(DATA),--data $(DATA),) --train 'nasbench201/*,nasbench301/*' \
		--test 'transbench101_micro/*' --pop 1000 --gens 50 --seed 0 --out $(OUT)

test: install-dev
	$(PY) -m pytest -q

bench: install
	$(VENV)/bin/tensorgp bench

# Regenerates docs/results.md and docs/figures (about 25-45 min on 2 idle cores; cached runs in runs/quality resume)
report: install
	$(PY) -m pip install -q --disable-pip-version-check -e ".[report]"
	$(PY) bench/quality.py --data ../shared/data --out runs/quality --report docs/results.md

clean:
	rm -rf $(VENV) runs .pytest_cache
