# lockfs — build, test and benchmark on Debian 12.
#
#   make test     install what is missing, build, run every test (what CI runs)
#   make bench    release build, print `bench: NAME VALUE UNIT` lines
#   make install  PREFIX=/usr/local (default)

SWIFT    ?= swift
PREFIX   ?= /usr/local
DESTDIR  ?=
VENV     := .build/venv

# Debian packages the build and the tests need.
DEB_PACKAGES := libfuse3-dev fuse3 libsodium-dev libsqlite3-dev libcurl4-openssl-dev \
                pkg-config python3 python3-venv rsync git curl postgresql
# Python packages for the independent cross-check of the crypto vectors
# (and of the SigV4 vectors: botocore), and moto's S3 server for the
# S3 blob store's tests.
PY_PACKAGES  := pynacl==1.5.0 argon2-cffi==23.1.0 botocore==1.44.8 boto3==1.44.8 moto[server]==5.2.5

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

SERVE_DATA ?= $(HOME)/.local/share/lockfs-server
SERVE_LISTEN ?= 127.0.0.1:7440

.PHONY: FORCE all deps build release test test-swift test-vectors soak bench serve demo demo-stop install clean

all: build

## deps: install missing Debian packages (idempotent; nothing happens when all are there).
deps:
	@command -v $(SWIFT) >/dev/null || { echo "error: Swift 6 is not installed (see https://www.swift.org/install/linux/); lockfs needs swift on PATH" >&2; exit 1; }
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

## test: every test, from a fresh clone (CI runs exactly this).
test: deps test-swift test-vectors

# Three runs: the server's suites, whose long-poll and rate-limit tests
# measure time, are not loaded by the client's heavier ones (crash,
# convergence) or by the real mounts (LockFSTests, which need /dev/fuse and
# run one at a time: the "within 2 s" of sync is measured there).
# The venv first: the S3 store's tests run against its moto_server.
# Each run is bounded (TEST_TIMEOUT seconds): a hung test fails the run with a
# message instead of holding CI until its own limit.
TEST_TIMEOUT ?= 1200
BOUNDED = timeout --kill-after=10 $(TEST_TIMEOUT)
test-swift: $(VENV)/.ready
	$(SWIFT) build --build-tests
	$(BOUNDED) $(SWIFT) test --skip-build --skip LockClientTests --skip LockFSTests || { echo "server suites failed or ran over $(TEST_TIMEOUT) s" >&2; exit 1; }
	$(BOUNDED) $(SWIFT) test --skip-build --filter LockClientTests || { echo "client suites failed or ran over $(TEST_TIMEOUT) s" >&2; exit 1; }
	$(BOUNDED) $(SWIFT) test --skip-build --no-parallel --filter LockFSTests || { echo "mount suites failed or ran over $(TEST_TIMEOUT) s" >&2; exit 1; }

## soak: the convergence simulation at length: SOAK_SESSIONS short sessions (60 rounds,
## three to five devices) and SOAK_LONG_SESSIONS of SOAK_LONG_ROUNDS rounds, from SOAK_SEED;
## each run also drives the oracle through two real mounts for SOAK_MOUNT_ROUNDS rounds
## (seeds SOAK_SEED + 30 and + 31; CI's `make test` runs it for 150 rounds at seed 12).
SOAK_SEED ?= 1
SOAK_SESSIONS ?= 2000
SOAK_LONG_SESSIONS ?= 10
SOAK_LONG_ROUNDS ?= 3000
SOAK_MOUNT_ROUNDS ?= 400
soak: deps
	$(SWIFT) build --build-tests
	@start=$$(date +%s); \
	echo "soak: $(SOAK_SESSIONS) sessions of 60 rounds from seed $(SOAK_SEED)"; \
	LOCKFS_SOAK_ROUNDS=60 LOCKFS_SOAK_SESSIONS=$(SOAK_SESSIONS) LOCKFS_SOAK_SEED=$(SOAK_SEED) \
	LOCKFS_MOUNT_SOAK_ROUNDS=$(SOAK_MOUNT_ROUNDS) LOCKFS_MOUNT_SOAK_SEED=$$(( $(SOAK_SEED) + 30 )) \
	  $(SWIFT) test --skip-build --filter ConvergenceTests || exit 1; \
	echo "soak: $(SOAK_LONG_SESSIONS) sessions of $(SOAK_LONG_ROUNDS) rounds from seed $$(( $(SOAK_SEED) + 100000 ))"; \
	LOCKFS_SOAK_ROUNDS=$(SOAK_LONG_ROUNDS) LOCKFS_SOAK_SESSIONS=$(SOAK_LONG_SESSIONS) LOCKFS_SOAK_SEED=$$(( $(SOAK_SEED) + 100000 )) \
	LOCKFS_MOUNT_SOAK_ROUNDS=$(SOAK_MOUNT_ROUNDS) LOCKFS_MOUNT_SOAK_SEED=$$(( $(SOAK_SEED) + 31 )) \
	  $(SWIFT) test --skip-build --filter ConvergenceTests || exit 1; \
	echo "soak: $$(( $(SOAK_SESSIONS) * 60 + $(SOAK_LONG_SESSIONS) * $(SOAK_LONG_ROUNDS) )) rounds green in $$(( $$(date +%s) - start )) s"

# Made again when PY_PACKAGES changes (the list is kept in the stamp).
$(VENV)/.ready: $(if $(filter-out $(PY_PACKAGES),$(shell cat $(VENV)/.ready 2>/dev/null))$(filter-out $(shell cat $(VENV)/.ready 2>/dev/null),$(PY_PACKAGES)),FORCE)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q $(foreach p,$(PY_PACKAGES),'$(p)')
	echo '$(PY_PACKAGES)' > $@

FORCE:

## test-vectors: recompute the crypto, wire and SigV4 golden vectors with independent implementations.
test-vectors: $(VENV)/.ready
	$(VENV)/bin/python Tests/Vectors/crosscheck.py

# The venv: the server part's scale-out phase runs moto's S3 server (and a
# throwaway PostgreSQL cluster, from DEB_PACKAGES).
bench: release $(VENV)/.ready
	@missing=""; ls /usr/src/linux-source-*.tar.xz >/dev/null 2>&1 || missing=" linux-source"; \
	command -v gocryptfs >/dev/null || missing="$$missing gocryptfs"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (the mount bench's source tree; gocryptfs, the FUSE file system it compares with)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(SWIFT) build -c release --product lockfs-bench
	.build/release/lockfs-bench

## serve: run lockfs-server on loopback with the embedded stores, after printing an invite.
serve: release
	@echo "data: $(SERVE_DATA)"
	@if out=$$(.build/release/lockfs-server user add demo --data "$(SERVE_DATA)" 2>&1); then echo "$$out"; \
	  else echo "$$out" | tail -1; echo "(see: .build/release/lockfs-server user list --data $(SERVE_DATA))"; fi
	@echo "Stop with Ctrl-C."
	.build/release/lockfs-server serve --data "$(SERVE_DATA)" --listen $(SERVE_LISTEN)

## demo: a server on loopback, a vault and a mount, for real (DEMO_DIR; `make demo-stop` ends it).
DEMO_DIR ?= $(HOME)/lockfs-demo
DEMO_LISTEN ?= 127.0.0.1:7440
demo: release
	@set -e; d="$(DEMO_DIR)"; bin="$(CURDIR)/.build/release"; \
	mkdir -p "$$d/Sync"; chmod 700 "$$d"; \
	if [ -f "$$d/server.pid" ] && kill -0 "$$(cat "$$d/server.pid")" 2>/dev/null; then \
	  echo "server: already running (pid $$(cat "$$d/server.pid"))"; \
	else \
	  nohup "$$bin/lockfs-server" serve --data "$$d/server" --listen $(DEMO_LISTEN) > "$$d/server.log" 2>&1 & echo $$! > "$$d/server.pid"; \
	  for i in $$(seq 1 100); do curl -sf http://$(DEMO_LISTEN)/v1/health > /dev/null 2>&1 && break; sleep 0.1; done; \
	  curl -sf http://$(DEMO_LISTEN)/v1/health > /dev/null || { echo "the server did not start; see $$d/server.log"; exit 1; }; \
	  echo "server: lockfs-server on http://$(DEMO_LISTEN), data in $$d/server (log $$d/server.log)"; \
	fi; \
	if [ ! -f "$$d/client/device.json" ]; then \
	  umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$$d/password"; \
	  invite=$$("$$bin/lockfs-server" user add demo --data "$$d/server" | tail -1); \
	  "$$bin/lockfs" init --home "$$d/client" --server http://$(DEMO_LISTEN) --user demo --invite "$$invite" \
	    --password-file "$$d/password" --device-name demo > "$$d/recovery-key.txt"; \
	  echo "vault: created for user demo (password in $$d/password, recovery key in $$d/recovery-key.txt)"; \
	fi; \
	if mountpoint -q "$$d/Sync"; then echo "mount: $$d/Sync is mounted already"; \
	else "$$bin/lockfs" mount --home "$$d/client" "$$d/Sync"; fi; \
	echo; echo "Try:"; \
	echo "  cp -r /usr/share/doc/fuse3 $$d/Sync/ && ls -l $$d/Sync/fuse3"; \
	echo "  $$bin/lockfs status $$d/Sync            # connection, queue, cache"; \
	echo "  $$bin/lockfs pin $$d/Sync/fuse3         # keep it offline"; \
	echo "  grep -r fuse3 $$d/server | wc -l        # 0: the server holds only ciphertext"; \
	echo "  a second device: $$bin/lockfs login --home /tmp/phone --server http://$(DEMO_LISTEN) --user demo --password-file $$d/password"; \
	echo "                   mkdir -p /tmp/phone-Sync && $$bin/lockfs mount --home /tmp/phone /tmp/phone-Sync"; \
	echo "Stop: make demo-stop   (unmounts and stops the server; the data stays in $$d)"

demo-stop:
	-@.build/release/lockfs umount --home "$(DEMO_DIR)/client" "$(DEMO_DIR)/Sync" 2>/dev/null || fusermount3 -u -z "$(DEMO_DIR)/Sync" 2>/dev/null || true
	-@if [ -f "$(DEMO_DIR)/server.pid" ]; then kill "$$(cat "$(DEMO_DIR)/server.pid")" 2>/dev/null; rm -f "$(DEMO_DIR)/server.pid"; echo "server stopped"; fi

install: release
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/sbin $(DESTDIR)$(PREFIX)/lib/systemd/user $(DESTDIR)$(PREFIX)/lib/systemd/system \
	  $(DESTDIR)$(PREFIX)/share/doc/lockfs/examples
	install -m 0755 .build/release/lockfs .build/release/lockfs-server $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 mount-helpers/mount.lockfs $(DESTDIR)/sbin/mount.lockfs
	install -m 0644 mount-helpers/lockfs@.service $(DESTDIR)$(PREFIX)/lib/systemd/user/
	install -m 0644 mount-helpers/lockfs-server.service $(DESTDIR)$(PREFIX)/lib/systemd/system/
	install -m 0644 mount-helpers/fstab.example mount-helpers/home-alice-Sync.mount mount-helpers/home-alice-Sync.automount \
	  $(DESTDIR)$(PREFIX)/share/doc/lockfs/examples/
	install -m 0644 docs/*.md $(DESTDIR)$(PREFIX)/share/doc/lockfs/

clean:
	$(SWIFT) package clean
	rm -rf $(VENV)
