# make run     — set up .venv if needed and run mitmdump with the bgfetch addon (ARGS="..." appended)
# make web     — the same with mitmweb, make console — with the mitmproxy console (commands at its prompt)
# make test    — the same set-up, then the whole test suite
# make bench — the benchmarks in bench/, side by side with plain mitmdump and direct curl

VENV   := .venv
PY     := $(VENV)/bin/python
ARGS   ?=
PYTEST_ARGS ?=

# Python >= 3.12: python3.13, else python3.12, also when pyenv has them but does not expose them.
PYTHON := $(shell for v in 3.13 3.12; do \
	for c in python$$v $$(ls -d $$HOME/.pyenv/versions/$$v*/bin/python$$v /usr/local/bin/python$$v /usr/bin/python$$v 2>/dev/null); do \
		$$c -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1 && { echo $$c; exit 0; }; \
	done; done)

.PHONY: run web console test bench clean

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "bgfetch needs Python 3.12 or newer (python3.13 or python3.12 on PATH)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

# Keep up to 32 MiB of freed memory instead of handing it back and faulting it in again (see
# store/proxyside/process.py); a GLIBC_TUNABLES of your own wins.
MALLOC = GLIBC_TUNABLES=$${GLIBC_TUNABLES:-glibc.malloc.trim_threshold=33554432:glibc.malloc.mmap_threshold=33554432}

run: $(VENV)/.installed
	$(MALLOC) $(VENV)/bin/mitmdump -s addon.py $(ARGS)

web: $(VENV)/.installed
	$(MALLOC) $(VENV)/bin/mitmweb -s addon.py $(ARGS)

console: $(VENV)/.installed
	$(MALLOC) $(VENV)/bin/mitmproxy -s addon.py $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
