# make demo: set up (if needed) and run the local demo.  make test: set up (if needed) and run the tests.
VENV ?= .venv
ROOT ?= lineage
STAMP := $(VENV)/.installed

.PHONY: demo demo-real test bench clean-lineage

$(STAMP): pyproject.toml scripts/setup-venv.sh
	VENV=$(VENV) bash scripts/setup-venv.sh

demo: $(STAMP)
	$(VENV)/bin/evo demo --root $(ROOT)

demo-real: $(STAMP)
	$(VENV)/bin/evo demo --base smollm2 --root $(ROOT)-smollm2

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q --timeout=900 --durations=20

bench: $(STAMP)
	$(VENV)/bin/python bench/bench_ab_calibration.py
	$(VENV)/bin/python bench/bench_feedback.py
	$(VENV)/bin/python bench/bench_generation.py
	$(VENV)/bin/python bench/bench_demo_replay.py
	$(VENV)/bin/python bench/bench_serving.py
	$(VENV)/bin/python bench/bench_sweep.py
	$(VENV)/bin/python bench/bench_sweep.py --steps 900 1200
	$(VENV)/bin/python bench/bench_demo.py
	$(VENV)/bin/python bench/demo_autoscaling.py
	$(VENV)/bin/python bench/bench_real_base.py
	$(VENV)/bin/python bench/bench_packing.py
	$(VENV)/bin/python bench/bench_compare_bases.py

clean-lineage:
	rm -rf $(ROOT)
