# gpuvfs developer commands. `make demo` and `make test` set up everything they need.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test tsan gpu-check bundle clean

$(STAMP): pyproject.toml
	@bash scripts/setup-system.sh
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

# The main job: make a small data set, read it from a kernel through gpuvfs on whatever
# backend "auto" finds, print what was read and the runtime's stats.
demo: $(STAMP)
	$(VPY) -m gpuvfs demo

# The test suite (cpu backend; GPU tests skip cleanly without a GPU), then the
# ThreadSanitizer run of the device protocol code.
test: $(STAMP)
	$(VPY) -m pytest -q
	$(MAKE) tsan

tsan:
	bash tests/native/run-tsan.sh

# On a GPU host: the gpu suite and the benchmarks' quick mode (see docs/benchmarks.md).
gpu-check:
	bash scripts/gpu-check.sh

# Offline bundle for the GPU host (pyfuse3, lmdb, trio, KvikIO wheels) into .bundle/.
bundle:
	bash scripts/make-bundle.sh

clean:
	rm -rf $(VENV) build dist *.egg-info tests/native/build
