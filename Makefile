# qstep: two commands do everything on a fresh Debian 12 machine:
#   make demo   - install what is missing, fetch the kernel, build the guest, run the example
#   make test   - the test suite (unit tests and real-VM tests); CI runs exactly this
SHELL := /bin/bash
QSTEP_CACHE ?= $(HOME)/.cache/qstep
export QSTEP_CACHE
VENV := $(QSTEP_CACHE)/venv
PY := $(VENV)/bin/python
QSTEP := $(VENV)/bin/qstep
BUILD := $(QSTEP_CACHE)/build
KERNEL ?= 6.1
EXAMPLE := $(BUILD)/examples/l4lb.bpf.o
PACKETS := examples/l4lb/packets

.PHONY: deps demo test test-kernels test-kernel-build test-recorded test-unit test-reliability lint bench examples progs debug clean-build vsix

deps:
	@scripts/install-deps.sh

examples: deps
	@$(MAKE) -s -C examples/l4lb OUT=$(BUILD)/examples

progs: deps
	@$(MAKE) -s -C tests/progs OUT=$(BUILD)/progs

demo: examples
	$(QSTEP) images fetch $(KERNEL)
	$(QSTEP) disasm $(EXAMPLE) --prog l4lb_ingress --kernel $(KERNEL) | head -60
	$(QSTEP) run $(EXAMPLE) --prog l4lb_ingress --kernel $(KERNEL) --maps examples/l4lb/maps.txt \
	  --packet $(PACKETS)/ipv4_to_v4real.hex --packet $(PACKETS)/ipv6_to_v6real.hex \
	  --packet $(PACKETS)/ipv4_novip.hex --packet $(PACKETS)/ctl_lookup_fail.hex
	@echo; echo "== inspect: probes run inside the guest, over C variables; probe 1 prints only for packets sent to the IPv6 real 2001:db8:ff::2"
	$(QSTEP) inspect $(EXAMPLE) --prog l4lb_ingress --kernel $(KERNEL) --maps examples/l4lb/maps.txt \
	  'l4lb.bpf.c:158 if real->dstv6 == 2001:db8:ff::2 print vip_num, *real' \
	  'l4lb.bpf.c:178 print vip_num, *st' --packet $(PACKETS)/ipv4_to_v4real.hex \
	  --packet $(PACKETS)/ipv6_to_v6real.hex --packet $(PACKETS)/ipv4_udp_to_v6real.hex
	@echo; echo "== debug (batch): break at a line, backtrace, registers, next, C variables"
	$(QSTEP) debug $(EXAMPLE) --prog l4lb_ingress --kernel $(KERNEL) --maps examples/l4lb/maps.txt \
	  --packet $(PACKETS)/ipv6_to_v6real.hex -ex 'break l4lb.bpf.c:156' -ex run -ex bt \
	  -ex 'info registers' -ex next -ex 'print vip_num' -ex 'print *real'
	@echo; echo "== trace: every BPF instruction with its line and registers (excerpt)"
	$(QSTEP) trace $(EXAMPLE) --prog l4lb_ingress --kernel $(KERNEL) --maps examples/l4lb/maps.txt \
	  --packet $(PACKETS)/ipv4_to_v4real.hex | sed -n '1,6p;/process_packet:0 /,+3p;$$p'

test: deps examples progs
	$(PY) -m pytest -q tests

# The kernel-dependent VM tests on chosen kernels of the matrix (make test runs them on
# all of 6.1, 6.12, 7.2, 7.3):   make test-kernels KERNELS=7.3
KERNEL_TESTS := tests/vm/test_jit_map.py tests/vm/test_trace_oracle.py tests/vm/test_l4lb_run.py \
	tests/vm/test_debugger.py tests/vm/test_inspect.py tests/vm/test_private_stack.py \
	tests/vm/test_prog_shapes.py
KERNELS ?= 6.1,6.12,7.2,7.3
test-kernels: deps examples progs
	QSTEP_TEST_KERNELS=$(KERNELS) $(PY) -m pytest -q $(KERNEL_TESTS)

# Opt-in and long (a kernel build on 2 cores takes about an hour): build the kernel of a
# source tree (qstep images build, cached by commit and config) and run the
# kernel-matrix VM tests on it.   make test-kernel-build KSRC=/path/to/linux
test-kernel-build: deps examples progs
	@test -n "$(KSRC)" || { echo "usage: make test-kernel-build KSRC=/path/to/linux"; exit 2; }
	img=$$($(QSTEP) images build $(KSRC)) && QSTEP_TEST_KERNELS=$$img $(PY) -m pytest -q \
	  $(KERNEL_TESTS)

# Opt-in: inspect from recordings against in-guest probes, every case on 6.1 and 6.12.
test-recorded: deps examples progs
	QSTEP_TEST_RECORDED_ALL=1 $(PY) -m pytest -q tests/vm/test_inspect_recorded.py

test-unit: deps
	$(PY) -m pytest -q tests/unit

# More kills than make test's 12 (SIGINT/SIGTERM/SIGKILL at random moments of each command).
test-reliability: deps examples
	QSTEP_RELIABILITY_KILLS=$${KILLS:-60} $(PY) -m pytest -q -s tests/vm/test_reliability.py

lint: deps
	$(VENV)/bin/ruff check qstep tests bench
	$(VENV)/bin/mypy

# make debug PROG=path/to/prog.o [PACKET=file-or-hex] [ARGS="--prog NAME --maps FILE"]
PROG ?= $(EXAMPLE)
PACKET ?= 000000000000000000000000000000000000000000000000000000000000000000000000
debug: examples
	$(QSTEP) debug $(PROG) --packet $(PACKET) --kernel $(KERNEL) $(ARGS)

bench: examples
	$(PY) bench/boot_and_run.py
	$(PY) bench/step_rate.py
	$(PY) bench/trace_rate.py
	$(PY) bench/probe_cost.py
	$(PY) bench/probe_drain.py
	$(PY) bench/hwbp_misses.py
	$(PY) bench/record_rate.py
	$(PY) bench/inspect_recorded.py
	$(PY) bench/live_record.py
	$(PY) bench/transfer_rate.py
	$(PY) bench/snapshot_restore.py
	$(PY) bench/mcp_reuse.py

# The VS Code extension (editors/vscode) as a .vsix, built with @vscode/vsce from the cache.
VSIX := $(BUILD)/qstep.vsix
vsix: deps
	@mkdir -p $(BUILD)
	cd editors/vscode && $(QSTEP_CACHE)/node/node_modules/.bin/vsce package \
	  --no-dependencies -o $(VSIX)

clean-build:
	rm -rf $(BUILD)
