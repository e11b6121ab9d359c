# STIR/SHAKEN proxy for Kamailio 5.6: install, test, run, benchmark.
#
#   make run        install what is missing, make a dev PKI, start Redis, the
#                   certificate server and Kamailio in the foreground (Ctrl-C stops all)
#   make demo-call  two SIPp calls through the running service (see README)
#   make demo-vendors  SIPp vendors on 5090 and 5092 until Ctrl-C (for your own calls)
#   make test       install what is missing, run the whole suite (incl. Kamailio)
#   make bench      library benchmark, then the SIP path and as302 benchmarks
#   make cfgcheck   kamailio -c on kamailio.cfg
#
# Debian 12, as root (or with sudo).  Package installs are idempotent: apt-get
# runs only when a package is missing, and `apt-get update` once before it.

SHELL := /bin/bash
.DEFAULT_GOAL := help

SYS_PYTHON := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
REPO := $(CURDIR)

# kamailio: core + tm, sl, rr, dispatcher, ctl, cfg_rpc, textops, ...
# kamailio-python3-modules: app_python3; kamailio-secsipid-modules: benchmark (b)
DEB_PACKAGES := python3 python3-venv kamailio kamailio-python3-modules \
	kamailio-secsipid-modules redis-server sip-tester secsipidx

# make run
RUN_DIR := $(REPO)/run
PKI_DIR := $(REPO)/pki
SIP_PORT ?= 5060
REDIS_PORT ?= 6379
CERT_PORT ?= 8443
VENDOR_PORTS ?= 5090 5092
# Kamailio shared memory (MB): transactions live ~5 s after a call ends, so
# each call/s of load holds about 150 KB (as302: two branches and the 302)
SHM_MB ?= 256
# Kamailio's memory manager (kamailio -x, shared and private memory). Debian's
# default, qm, is the debugging allocator: on a lightly fragmented heap every
# allocation walks its free-list table, which about doubled the CPU of a plain
# relay here (bench/bench_sip.py --sequential --mem-manager qm|tlsf: about 400
# against 200 us/call).
MEM_MANAGER ?= tlsf

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help deps venv test unit cfgcheck run demo-call demo-vendors bench pki clean

help:
	@sed -n '2,/^$$/p' Makefile | sed -e 's/^# \{0,1\}//' 

deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  policy=/usr/sbin/policy-rc.d; made_policy=; \
	  if [ ! -e $$policy ]; then \
	    printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee $$policy >/dev/null && $(SUDO) chmod +x $$policy && made_policy=1; \
	  fi; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $$missing; rc=$$?; \
	  [ -n "$$made_policy" ] && $(SUDO) rm -f $$policy; \
	  exit $$rc; \
	fi

# The venv is made with Debian's python3: Kamailio embeds that interpreter and
# the KEMI script puts this venv's site-packages ahead of dist-packages.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(SYS_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

venv: deps $(VENV)/.installed

test: deps venv
	$(PY) -m pytest -q -ra tests

unit: venv
	$(PY) -m pytest -q -ra -m "not kamailio" tests

cfgcheck: deps
	@mkdir -p $(RUN_DIR)
	kamailio -c -f kamailio.cfg -w $(REPO) -A 'SS_RUNDIR="$(RUN_DIR)"' -A 'SS_CTL_SOCKET="unix:$(RUN_DIR)/kamailio_ctl"'

pki: venv
	@$(PY) -c 'from stirshaken.pki import ensure_test_pki; p = ensure_test_pki("$(PKI_DIR)"); print("pki:", p.out_dir)'

# Redis on 127.0.0.1:6379 (an already running one there is used as is), the
# certificate server on https://127.0.0.1:8443/, Kamailio on udp 127.0.0.1:5060.
# Everything started here is stopped on exit, by PID.
run: deps venv pki
	@mkdir -p $(RUN_DIR); \
	pids=(); \
	cleanup() { for pid in "$${pids[@]}"; do kill -TERM -- "-$$pid" 2>/dev/null || true; done; wait 2>/dev/null; echo "run: stopped"; }; \
	trap cleanup EXIT; trap 'exit 130' INT TERM; \
	if redis-cli -h 127.0.0.1 -p $(REDIS_PORT) ping 2>/dev/null | grep -q PONG; then \
	  redis_url="redis://127.0.0.1:$(REDIS_PORT)/0"; \
	  echo "run: using the Redis already on 127.0.0.1:$(REDIS_PORT)"; \
	else \
	  setsid redis-server --bind 127.0.0.1 --port $(REDIS_PORT) --save '' --appendonly no --dir $(RUN_DIR) \
	    --unixsocket $(RUN_DIR)/redis.sock --unixsocketperm 700 >$(RUN_DIR)/redis.log 2>&1 & pids+=($$!); \
	  for i in $$(seq 50); do redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1 && break; sleep 0.1; done; \
	  redis_url="unix://$(RUN_DIR)/redis.sock?db=0"; \
	  echo "run: Redis on 127.0.0.1:$(REDIS_PORT) and $(RUN_DIR)/redis.sock (Kamailio uses the socket)"; \
	fi; \
	setsid $(VENV)/bin/stirshaken serve-certs --dir $(PKI_DIR)/www --host 127.0.0.1 --port $(CERT_PORT) \
	  --cert $(PKI_DIR)/tls-cert.pem --key $(PKI_DIR)/tls-key.pem >$(RUN_DIR)/certserver.log 2>&1 & pids+=($$!); \
	echo "run: certificate server on https://127.0.0.1:$(CERT_PORT)/ (x5u https://127.0.0.1:$(CERT_PORT)/sp.pem)"; \
	echo "run: Kamailio on udp 127.0.0.1:$(SIP_PORT), vendors from dispatcher.list; Ctrl-C stops everything"; \
	kamailio -DD -E -f kamailio.cfg -w $(REPO) -m $(SHM_MB) -M 16 -x $(MEM_MANAGER) \
	  -A SS_LISTEN=udp:127.0.0.1:$(SIP_PORT) \
	  -A 'SS_RUNDIR="$(RUN_DIR)"' -A 'SS_CTL_SOCKET="unix:$(RUN_DIR)/kamailio_ctl"' \
	  -A "SS_REDIS_URL=\"$$redis_url\"" \
	  -A 'SS_AS_X5U="https://127.0.0.1:$(CERT_PORT)/sp.pem"'

# Two SIPp vendors on the default routing group's ports (answer 200), so a
# demo call has somewhere to go; stopped with Ctrl-C.
demo-vendors: deps
	@mkdir -p $(RUN_DIR); pids=(); \
	trap 'for pid in "$${pids[@]}"; do kill -TERM "$$pid" 2>/dev/null || true; done' EXIT; trap 'exit 130' INT TERM; \
	for port in $(VENDOR_PORTS); do \
	  sipp -sf sipp_scenarios/vendor/uas.xml -i 127.0.0.1 -p $$port -nostdin -bind_local \
	    -trace_msg -message_file $(RUN_DIR)/vendor-$$port-messages.log >/dev/null 2>&1 & pids+=($$!); \
	done; \
	echo "demo-vendors: SIPp vendors on $(VENDOR_PORTS); INVITEs they get: $(RUN_DIR)/vendor-PORT-messages.log"; \
	wait

# One call through the running `make run`; starts the vendors for the call
# unless they already run.
demo-call: deps venv
	@$(PY) tests/demo_call.py --sip-port $(SIP_PORT) --vendor-ports "$(VENDOR_PORTS)"

bench: deps venv
	$(PY) bench/bench_library.py
	$(PY) bench/bench_sip.py
	$(PY) bench/bench_as302.py

clean:
	rm -rf $(RUN_DIR) .pytest_cache
