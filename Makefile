# faceedge — thin wrapper over the stage CLIs. `make help` lists the targets.
SHELL        := /bin/bash
PYTHON       ?= python3
VENV         ?= .venv
PY           := $(VENV)/bin/python
CONFIG       ?= configs/sample.yaml
DATA         ?= data/sample
SEED         ?= 0
RUN          ?= runs/latest
RUNS         ?= $(patsubst %/metrics.json,%,$(wildcard runs/*-*/metrics.json))# finished training runs
FROM         ?=
DEVICE_CONFIG ?= configs/device.yaml
SOURCE       ?=
PI           ?=
PORT         ?= 22
SSH_KEY      ?=
REMOTE_DIR   ?= faceedge
KNOWN_HOSTS  ?=
SSH_OPTS      = $(if $(SSH_KEY),--ssh-key $(SSH_KEY)) $(if $(KNOWN_HOSTS),--known-hosts $(KNOWN_HOSTS))
ARGS         ?=
PYTEST_ARGS  ?=
PI_SUITES    ?= bookworm,trixie
PI_CPUS      ?= cortex-a72,cortex-a76
APT_PACKAGES := mosquitto openssh-server rsync systemd openssl chromium
# The imx500 variant's own environment (convert/imx500/): Sony's tools need Python < 3.12 and TF 2.15.
IMX500_VENV  ?= .venv-imx500
IMX500       ?= 1# make setup builds it too (its tests run in CI); IMX500=0 skips it (the tests then skip)
IMX500_PYTHON ?= $(firstword $(foreach p,python3.11 python3.10 python3.9 python3,$(shell command -v $(p) >/dev/null 2>&1 && $(p) -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] < (3, 12))' 2>/dev/null && echo $(p))))
IMX500_APT_PACKAGES := openjdk-17-jre-headless
# MediaPipe's own environment (convert/mediapipe/): TFLite metadata for the exported models, and its
# ImageClassifier in the tests. Never in .venv: mediapipe replaces cv2 with opencv-contrib.
MEDIAPIPE_VENV ?= .venv-mediapipe
MEDIAPIPE    ?= 1# make setup builds it too; MEDIAPIPE=0 skips it (models are then exported without metadata)
NAME         ?= mine# make pull / make label: data/$(NAME)/
REMOTE_DATA  ?= $(REMOTE_DIR)/data/$(NAME)
# apt-get install the packages of $(1) that are missing (as root, or with sudo)
apt_install = missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

.DEFAULT_GOAL := help
.PHONY: help setup setup-imx500 setup-mediapipe pull label status lint test test-fast pibox test-pi data train compare convert crop-faces run-device check-device \
        deploy rollback deploy-model bench bench-model bench-http bench-train bench-device demo video clean distclean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: ## create .venv (+ .venv-imx500, .venv-mediapipe unless IMX500=0, MEDIAPIPE=0) with everything the tests need (apt packages included)
	@$(call apt_install,$(APT_PACKAGES))
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,device,dev]'
	$(if $(filter 1,$(IMX500)),$(MAKE) --no-print-directory setup-imx500)
	$(if $(filter 1,$(MEDIAPIPE)),$(MAKE) --no-print-directory setup-mediapipe)

setup-mediapipe: ## create .venv-mediapipe: MediaPipe's TFLite metadata writer + ImageClassifier (its own env)
	$(PYTHON) -m venv $(MEDIAPIPE_VENV)
	$(MEDIAPIPE_VENV)/bin/python -m pip install -q --upgrade pip
	$(MEDIAPIPE_VENV)/bin/python -m pip install -q -r convert/mediapipe/requirements.txt

setup-imx500: ## create .venv-imx500: Sony's MCT + IMX500 converter (TF 2.15, Java 17) for convert --variants imx500
	$(if $(IMX500_PYTHON),,$(error no Python 3.9-3.11 found (Sony's converter needs < 3.12): set IMX500_PYTHON=/path/to/python3.11))
	@$(call apt_install,$(IMX500_APT_PACKAGES))
	$(IMX500_PYTHON) -m venv $(IMX500_VENV)
	$(IMX500_VENV)/bin/python -m pip install -q --upgrade pip
	$(IMX500_VENV)/bin/python -m pip install -q -r convert/imx500/requirements.txt

$(PY):
	$(error $(VENV) is missing: run `make setup` first)

test: | $(PY) ## run the whole test suite (but the emulated-Pi tests: make test-pi)
	$(PY) -m pytest -m 'not pi' $(PYTEST_ARGS)

lint: | $(PY) ## ruff: lint rules and formatting (configured in pyproject.toml); .ci/run runs it
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test-fast: | $(PY) ## run the tests not marked slow
	$(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

pibox: | $(PY) ## build the emulated arm64 Pi userlands (PI_SUITES), once: cached outside the repo
	$(PY) -m tests.pibox build --suites $(PI_SUITES)

test-pi: pibox ## install, parity and deploy tests in the emulated Pi (PI_SUITES x PI_CPUS)
	FACEEDGE_PI_REQUIRED=1 FACEEDGE_PI_SUITES=$(PI_SUITES) FACEEDGE_PI_CPUS=$(PI_CPUS) \
	  $(PY) -m pytest -m pi tests/pibox $(PYTEST_ARGS)

data: | $(PY) ## generate the offline sample dataset into DATA
	$(PY) -m train data --out $(DATA) --seed $(SEED) $(ARGS)

train: | $(PY) ## train CONFIG (default: the offline sample config) into runs/<name>-<timestamp>
	$(PY) -m train fit --config $(CONFIG) $(ARGS)

compare: | $(PY) ## print runs side by side (RUNS="runs/a runs/b")
	$(PY) -m train compare $(RUNS)

crop-faces: | $(PY) ## crop faces from raw photos (ARGS="--src DIR --out DIR")
	$(PY) -m train crop-faces $(ARGS)

convert: | $(PY) ## quantize RUN to int8 TFLite (+ float32) and verify it
	$(PY) -m convert --run $(RUN) $(ARGS)

video: | $(PY) ## the demo's video of RUN's unseen persons, with its ground truth (RUN/demo/)
	$(PY) -m convert.demo --from video --to video --run $(RUN) $(ARGS)

run-device: | $(PY) ## run the device daemon here (SOURCE=video/file/index overrides the config's source)
	$(PY) -m device run --config $(DEVICE_CONFIG) --model-dir $(RUN) $(if $(SOURCE),--source $(SOURCE)) $(ARGS)

check-device: | $(PY) ## load the model and run the self-test, as deploy does
	$(PY) -m device check --config $(DEVICE_CONFIG) --model-dir $(RUN) $(ARGS)

deploy: | $(PY) ## deploy daemon + model to PI=user@host[,user@host...]
	$(if $(PI),,$(error set PI=user@host))
	$(PY) -m device deploy --hosts $(PI) --port $(PORT) $(SSH_OPTS) --remote-dir $(REMOTE_DIR) --run $(RUN) --config $(DEVICE_CONFIG) $(ARGS)

rollback: | $(PY) ## go back one release on PI
	$(if $(PI),,$(error set PI=user@host))
	$(PY) -m device rollback --hosts $(PI) --port $(PORT) $(SSH_OPTS) --remote-dir $(REMOTE_DIR) $(ARGS)

status: | $(PY) ## what PI runs: current/previous release, model sha256, health, uptime (ARGS=--json)
	$(if $(PI),,$(error set PI=user@host))
	$(PY) -m device status --hosts $(PI) --port $(PORT) $(SSH_OPTS) --remote-dir $(REMOTE_DIR) $(ARGS)

deploy-model: | $(PY) ## ship a new model only and reload it with SIGHUP
	$(if $(PI),,$(error set PI=user@host))
	$(PY) -m device deploy-model --hosts $(PI) --port $(PORT) $(SSH_OPTS) --remote-dir $(REMOTE_DIR) --run $(RUN) --config $(DEVICE_CONFIG) $(ARGS)

pull: | $(PY) ## copy crops collected on PI (~/$(REMOTE_DATA)) into data/$(NAME)/: new files only, no overwrite
	$(if $(PI),,$(error set PI=user@host))
	$(PY) -m device pull --hosts $(PI) --port $(PORT) $(SSH_OPTS) --remote-data $(REMOTE_DATA) --out data/$(NAME) $(ARGS)

label: | $(PY) ## review data/$(NAME) in the browser (127.0.0.1:8099): move crops between labels/persons, trash bad ones
	$(PY) -m train label --data data/$(NAME) $(ARGS)

bench: | $(PY) ## on-device latency benchmark here (raw interpreter + whole pipeline)
	$(PY) -m device bench --model-dir $(RUN) $(ARGS)

bench-model: | $(PY) ## a model to bench with: int8 MobileNetV2 1.0 224, random weights (runs/bench-mobilenet_v2-224)
	$(PY) -m convert.benchmodel runs/bench-mobilenet_v2-224

bench-device: | $(PY) ## the same benchmark on PI over ssh, results brought back
	$(if $(PI),,$(error set PI=user@host))
	$(PY) -m device bench-remote --hosts $(PI) --port $(PORT) $(SSH_OPTS) --remote-dir $(REMOTE_DIR) $(ARGS)

bench-http: | $(PY) ## the daemon's HTTP under 20 concurrent loopback clients: latency, errors, fps and RSS change
	$(PY) -m device bench-http --model-dir $(RUN) $(ARGS)

bench-train: | $(PY) ## training input-pipeline and feature-cache benchmark (ratios)
	$(PY) -m train bench --config $(CONFIG) $(ARGS)

demo: | $(PY) ## the whole chain offline: data, train, convert, video, daemon on it, bench (FROM=stage RUN=run resumes)
	$(PY) -m convert.demo --data $(DATA) --config $(CONFIG) --seed $(SEED) $(if $(FROM),--from $(FROM) --run $(RUN)) $(ARGS)

clean: ## remove what the project generated (data/sample, runs it wrote, caches); never your files
	@$(PYTHON) train/clean.py

distclean: ## clean + .venv and build leftovers; lists them and asks (FORCE=1: no question)
	@$(PYTHON) train/clean.py --dist
