# Two entry points that work on a bare machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DB ?= data/emoscope.duckdb
export EMOSCOPE_CACHE ?= $(CURDIR)/.cache/emoscope

.PHONY: setup sysdeps test test-gpu demo demo-data bench bench-api bench-dashboard bench-readers clean

# System tools: espeak-ng/flite/sox make speech for fixtures and demo audio (flite: speech
# pocketsphinx recognises), chromium for the
# browser test. Installed only when missing, and only where apt is usable.
sysdeps:
	@missing=""; \
	for t in espeak-ng:espeak-ng flite:flite sox:sox ffmpeg:ffmpeg chromium:chromium; do \
	  cmd=$${t%%:*}; pkg=$${t##*:}; command -v $$cmd >/dev/null || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing system packages:$$missing (install them with your package manager)"; fi; fi

# torch==2.13.0 first (the CPU build on this disk); a looser spec would pull a CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: sysdeps $(VENV)/.installed

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

test-gpu: setup
	$(PY) -m pytest -q -m gpu

demo: setup
	$(VENV)/bin/emoscope demo --db $(DB)

demo-data: setup
	$(PY) data/demo/make_demo.py

bench: setup
	$(PY) bench/inference.py --model-shape base --audio-seconds 120 --device cpu

# The API under load: 1, 8 and 32 clients posting 5-s clips, micro-batching on vs off.
bench-api: setup
	$(PY) bench/api.py

BENCH_DB ?= /tmp/emoscope-bench.duckdb
bench-dashboard: setup
	[ -f $(BENCH_DB) ] || $(PY) bench/synth_store.py --db $(BENCH_DB)
	$(PY) bench/dashboard.py --db $(BENCH_DB)

# Busy dashboard readers against the one writer, with and without the writer-first gate.
bench-readers: setup
	$(PY) bench/readers_writer.py

clean:
	rm -rf $(VENV) .cache .pytest_cache
