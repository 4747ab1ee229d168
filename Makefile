# Photo tagger. First command: `make serve` (sets up, builds the default model if missing, starts everything).
# Tests: `make test`. Every install step lives here so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

# make train DATA="root1 root2" ANN="a.json b.json" OUT=dir ARGS="--epochs 5 --arch resnet18 --pretrained none"
DATA ?= samples/coco_subset samples/coco_more
ANN ?= $(foreach d,$(DATA),$(d)/annotations.json)
OUT ?= checkpoints/run
ARGS ?=
CHECKPOINT ?= checkpoints/default/best.pt
VERSION ?=
DATA_FLAGS = $(foreach d,$(DATA),--data $(d)) $(foreach a,$(ANN),--ann $(a))

.PHONY: help setup install-java install-chromium install-exiftool install-postgres install-nginx install-test-packages \
	default-archive serve-cluster migrate-store token revoke tokens test-fast tag export fuzz fuzz-api chaos load \
	serve stop status reparse-exif backup restore empty-trash lint test model archive train deploy rollback versions \
	kserve-bundle bench recipe-cv clean
.DEFAULT_GOAL := help

help:  ## this list (a bare `make` shows it; `make serve` and `make test` are the two commands)
	@awk 'BEGIN { FS = ":[^#]*## " } /^[a-z][a-z-]*:.*## / { printf "  make %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

# Read-only targets (status, tokens, versions, ...) need the virtual environment and never install anything.
NEED_VENV = @test -x $(PY) || { echo "no $(VENV) yet: run make setup (or make serve) first" >&2; exit 2; }

setup: install-java $(STAMP)  ## install: the virtual environment (pip, requirements.txt) and Java 17

# Debian packages (serving/debian.py: installed with apt-get when missing, one apt-get at a time, else named)
install-java:  ## install: Java 17 (TorchServe runs on it)
	@$(PYTHON) -m serving.debian java
install-chromium:  ## install: Debian's headless Chromium (the annotation page's browser tests; no download)
	@$(PYTHON) -m serving.debian chromium
install-postgres:  ## install: PostgreSQL 15 (make serve-cluster and the PostgreSQL store's tests)
	@$(PYTHON) -m serving.debian postgres
install-nginx:  ## install: nginx (make serve-cluster puts it in front of the gateway replicas)
	@$(PYTHON) -m serving.debian nginx
install-exiftool:  ## install: ExifTool (the photo library's XMP sidecars)
	@$(PYTHON) -m serving.debian exiftool

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt
	@# compiled on every core (pip compiles on one, twice as long); what does not compile under this Python is
	@# skipped, as pip skips it (torch's tests for 3.12 syntax)
	@$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1 || true
	@rm -f $(VENV)/.installed-*; touch $@

serve: setup  ## the first command: set up, build the default model if missing, start TorchServe and the gateway
	$(PY) -m serving serve

# PostgreSQL, TorchServe, REPLICAS gateway replicas (127.0.0.1:7781, ...) on one store, nginx on 127.0.0.1:7777
# (LISTEN=0.0.0.0 or a LAN address: reachable from other machines, and every request then needs a token; it answers
# to this machine's names and addresses, and HOSTS="photos.example 203.0.113.7" adds more)
REPLICAS ?=
LISTEN ?=
HOSTS ?=
serve-cluster: setup install-postgres install-nginx  ## PostgreSQL, TorchServe, REPLICAS gateways, nginx (LISTEN, HOSTS, TLS_CERT/TLS_KEY)
	$(PY) -m serving serve-cluster $(if $(REPLICAS),--replicas $(REPLICAS)) $(if $(LISTEN),--listen $(LISTEN)) \
		$(if $(HOSTS),--hosts "$(HOSTS)") $(if $(TLS_CERT),--tls-cert "$(TLS_CERT)") \
		$(if $(TLS_KEY),--tls-key "$(TLS_KEY)")

# API tokens for the gateway: make token NAME=laptop SCOPE=read|write (printed once), make revoke NAME=laptop|ID
# (NAME and SCOPE only from the command line: some systems export NAME, e.g. WSL's host name)
CLI_NAME = $(if $(filter command line,$(origin NAME)),--name "$(NAME)")
CLI_SCOPE = $(if $(filter command line,$(origin SCOPE)),--scope $(SCOPE))
token: setup  ## make an API token: NAME=who SCOPE=read|write (printed once)
	@$(PY) -m serving token $(CLI_NAME) $(CLI_SCOPE)

revoke: setup  ## revoke the tokens NAME=name-or-id
	@$(PY) -m serving revoke $(CLI_NAME)

tokens:  ## list the API tokens (never their secret)
	$(NEED_VENV)
	@$(PY) -m serving tokens

stop:  ## stop everything this checkout started (by PID), nothing left behind
	@if [ -x $(PY) ]; then $(PY) -m serving stop; fi

# Copy the SQLite store in var/ into PostgreSQL (resumable, verified): make migrate-store TO=postgresql://USER@HOST:PORT/DB
TO ?= $(DATABASE_URL)
migrate-store: setup  ## copy the SQLite store into PostgreSQL: TO=postgresql://USER@HOST:PORT/DB
	$(PY) -m photo_store.transfer --data-dir var --to "$(TO)"

# Parse again the EXIF of photos whose parse overran or whose parser died when they were stored
reparse-exif: setup  ## parse again the EXIF whose parse overran when it was stored
	@$(PY) -m serving reparse-exif

# A consistent backup while it serves (BACKUP=DIR, a new folder); its restore into an empty data folder (services
# stopped; DATABASE_URL=an empty database for a PostgreSQL backup); erase the trash (DAYS=N: only older entries)
backup: setup  ## a consistent backup while it serves: BACKUP=DIR
	@$(PY) -m serving backup "$(BACKUP)"

restore: setup  ## restore BACKUP=DIR into an empty data folder (services stopped), verified
	@$(PY) -m serving restore "$(BACKUP)"

empty-trash: setup  ## erase deleted photos now (DAYS=N: only those deleted over N days ago)
	@$(PY) -m serving empty-trash $(if $(DAYS),--days $(DAYS))

status:  ## what runs, with PIDs and addresses
	$(NEED_VENV)
	$(PY) -m serving status

# Every test, in parallel workers: most of the suite waits on servers it started (TorchServe, gunicorn, Chromium,
# PostgreSQL, nginx), so one worker more than there are cores keeps the cores busy (at most 6: memory)
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min((os.cpu_count() or 1) + 1, 6))")
# Side by side first: pip (then the default model, built when missing) and apt-get (what the tests start)
test:  ## the second command: every test (what CI runs), after pip, apt-get and the default model
	@$(MAKE) --no-print-directory -j3 setup install-test-packages default-archive
	$(PY) -m ruff check .
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# ruff (pyproject.toml [tool.ruff]): pyflakes, pycodestyle, bugbear, blind excepts, names; each noqa says why
lint: setup  ## ruff over the code (pyproject.toml [tool.ruff])
	$(PY) -m ruff check .

install-test-packages:  ## install: every Debian package the tests start (Java, Chromium, ExifTool, PostgreSQL, nginx)
	@$(PYTHON) -m serving.debian java chromium exiftool postgres nginx

# model_store/tagger.mar from the default model (built from the bundled samples when missing), re-packed when the
# handler code it carries is older than the repository's
default-archive: setup  ## model_store/tagger.mar from the default model (built when missing)
	@$(PY) -c "from serving.stack import ensure_default_archive; ensure_default_archive()"

# The unit tests only (no TorchServe, gunicorn or Chromium started, no model trained): seconds, for a quick check
test-fast: setup install-exiftool  ## ruff and the unit tests only (under a minute)
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not stack and not slow" -q -n $(TEST_WORKERS) --dist loadfile

# Tag a photo folder into XMP sidecars through the running gateway: make tag DIR=~/Pictures (GATEWAY=http://...)
DIR ?= samples
GATEWAY ?= http://127.0.0.1:7777
TAG_ARGS ?=
tag: setup install-exiftool  ## tag a photo folder into XMP sidecars: DIR=~/Pictures (GATEWAY=...)
	$(PY) -m photo_library tag "$(DIR)" --gateway $(GATEWAY) $(TAG_ARGS)

# The default model (the training tool's prior recipe) on the bundled samples, or on DATA/ANN when given.
model: setup  ## train the default model (the prior recipe) on the samples, or on DATA/ANN
	$(PY) -m training --recipe prior $(DATA_FLAGS) --output $(if $(filter command line,$(origin OUT)),$(OUT),checkpoints/default) $(ARGS)

# The training tool with the original flags: python -m training --help
train: setup  ## the training tool with the original flags: DATA, ANN, OUT, ARGS
	$(PY) -m training $(DATA_FLAGS) --output $(OUT) $(ARGS)

# Model versions on the running TorchServe: make deploy VERSION=1.1 (after make archive VERSION=1.1)
deploy: setup  ## make VERSION the served default (after make archive VERSION=...)
	@test -n "$(VERSION)" || { echo "usage: make deploy VERSION=X (after make archive CHECKPOINT=... VERSION=X)" >&2; exit 2; }
	$(PY) -m serving deploy $(VERSION)

rollback: setup  ## serve the previous version again
	$(PY) -m serving rollback

versions:  ## the model versions TorchServe holds
	$(NEED_VENV)
	$(PY) -m serving versions

# The KServe storage layout for deploy/kserve/inferenceservice.yaml: config/ + model-store/ with the default archive.
kserve-bundle: setup  ## the KServe storage layout (deploy/kserve/)
	$(PY) -c "from serving.stack import kserve_bundle; print(kserve_bundle())"

# The annotation page's labels as a COCO file the training tool reads: make export (OUT=var/export.json)
export: setup  ## the annotation page's labels as a COCO file (OUT=var/export.json)
	$(PY) -m annotation_ui.export --data-dir var --out $(if $(filter command line,$(origin OUT)),$(OUT),var/export.json)

# Fuzzing the decode and EXIF path with atheris for FUZZ_SECONDS (findings land in var/fuzz/; see RELIABILITY.md)
FUZZ_SECONDS ?= 300
fuzz: setup  ## atheris over the decoder and EXIF parser for FUZZ_SECONDS
	$(PY) -m fuzz.seeds var/fuzz/seeds
	@mkdir -p var/fuzz/corpus
	$(PY) -m fuzz.decode_exif -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=3072 -max_len=262144 \
		-artifact_prefix=var/fuzz/ var/fuzz/corpus var/fuzz/seeds

# schemathesis's command line against the real stack for FUZZ_API_SECONDS: every check, the stateful phase too
FUZZ_API_SECONDS ?= 60
fuzz-api: setup  ## schemathesis against the real stack for FUZZ_API_SECONDS
	$(PY) -m fuzz.api --seconds $(FUZZ_API_SECONDS)

# Faults: SIGKILL of TorchServe workers under load and of gateway workers during uploads, CHAOS_KILLS times
CHAOS_KILLS ?= 100
chaos: setup  ## SIGKILLs under load, CHAOS_KILLS times, and the hostile corpus
	CHAOS_KILLS=$(CHAOS_KILLS) $(PY) -m pytest -q -s -p no:cacheprovider tests/test_chaos.py tests/test_hostile.py

# Load: 16 clients uploading and looking up for LOAD_SECONDS across TorchServe key expiries (var/load.json)
LOAD_SECONDS ?= 240
load: setup  ## 16 clients for LOAD_SECONDS across key expiries (var/load.json)
	$(PY) -m benchmarks.load --seconds $(LOAD_SECONDS) --clients 16 --key-minutes 0.5 --out var/load.json

archive: setup  ## pack CHECKPOINT as model_store/tagger-VERSION.mar
	$(PY) -m training.archive --checkpoint $(CHECKPOINT) $(if $(VERSION),--version $(VERSION))

# Cold build of the default model (fresh feature cache): wall time against the 2-minute budget, and its CV mAP
# against the head-only and label-frequency baselines computed on the same folds in the same run. Then the
# training figures side by side: cached vs full-forward epochs, and the recipes on the same CV folds.
bench: setup  ## every benchmark, side by side with its baseline (BENCHMARKS.md)
	@rm -rf var/bench
	/usr/bin/time -f "default model build: %e s wall (budget 180 s)" \
		$(PY) -m training --recipe prior $(DATA_FLAGS) --output var/bench/default --cache-dir var/bench/cache
	$(PY) -m benchmarks.policies --checkpoint var/bench/default
	$(PY) -m benchmarks.detector
	$(PY) -m benchmarks.own_labels
	$(PY) -m benchmarks.decode
	$(PY) -m benchmarks.serving --checkpoint var/bench/default/best.pt
	$(PY) -m benchmarks.model_budget --checkpoint var/bench/default/best.pt
	$(PY) -m benchmarks.gateway
	$(PY) -m benchmarks.photo_library
	$(PY) -m benchmarks.cluster
	$(PY) -m benchmarks.store_scale
	$(PY) -m benchmarks.training --out var/bench/training

# The default recipe chosen by repeated k-fold CV on the bundled photos: every variant on the same folds, and the
# learning curve docs/learning_curve.png (about 12 minutes on 2 cores).
recipe-cv: setup  ## the default recipe chosen by repeated k-fold CV (about 12 minutes)
	$(PY) -m benchmarks.recipe_cv --out var/bench/recipe

clean: stop  ## stop, then remove checkpoints, archives and run state (never photos or labels)
	rm -rf checkpoints model_store/*.mar var/run var/cache
