# Two commands (see README.md):  make demo   and   make test
# Also: make napari (open napari with the plugin), make lint, make bench.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pair; override for another platform, e.g. TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
XVFB := xvfb-run -a -s "-screen 0 1600x1200x24"
SYSTEM_PACKAGES := xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 \
	libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
	libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 x11-utils

.PHONY: demo napari test lint bench system-deps venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[testing]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/lesion-harvest demo --out demo_output

napari: venv
	$(BIN)/napari --with napari-lesion-harvest

system-deps:
	@if command -v xvfb-run >/dev/null 2>&1 && ldconfig -p | grep -q libxcb-cursor.so.0; then \
		echo "system packages for headless Qt/OpenGL are present"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); \
	else \
		echo "Missing Xvfb/xcb libraries; as root run: apt-get install $(SYSTEM_PACKAGES)"; exit 1; \
	fi

test: venv system-deps
	QT_QPA_PLATFORM=xcb $(XVFB) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The repeatable benchmarks of benchmarks/: each builds its own data and prints its figures
# (docs/performance.md), here at its default settings, one after the other, on the CPU.
# Left out, to run alone: harvest_bench.py (3 rounds on 60 phantom volumes: about 33 min on
# 2 cores), quality_bench.py (several seeds of 3 rounds: hours; --out DIR) and
# lpg_gpu_bench.py (CUDA; tools/gpu_checks.sh runs it with harvest_bench.py on a GPU).
# Scripts that read an existing project or take required arguments are in tools/.
BENCH_SCRIPTS := import_bench pickle_bench io_bench slice_check_bench synth_bench \
	eval_bench tracking_bench store_bench lpc_bench lpg_bench torchrun_exit_bench \
	kill_soak_bench metric_agreement_bench lpg_phantom_bench

bench: venv system-deps
	for script in $(BENCH_SCRIPTS); do \
		OMP_NUM_THREADS=1 $(BIN)/python benchmarks/$$script.py || exit 1; \
	done
	QT_QPA_PLATFORM=xcb $(XVFB) $(BIN)/python benchmarks/ui_bench.py
