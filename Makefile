# edgevlm: `make demo` serves the demo model on http://localhost:8080, `make test` runs the tests.
# Both create .venv on first use; pip runs again only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 0.0.0.0
PORT ?= 8080
# The install stamp is named after pyproject.toml's content, so any edit there reinstalls.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
# mypy cannot follow setuptools' editable-install hook: it finds the package through this link.
MYPY_LINK := $(VENV)/mypy-path/edgevlm

.PHONY: demo test lint bench install browser clean

demo: $(STAMP)
	$(BIN)/edgevlm serve --host $(HOST) --port $(PORT)

# PYTEST_ARGS narrows a run: make test PYTEST_ARGS="tests/demo -k eval"
test: $(STAMP) browser
	$(BIN)/pytest $(PYTEST_ARGS)

# Both linters always run; the target fails if either found something.
lint: $(STAMP) $(MYPY_LINK)
	@status=0; $(BIN)/ruff check . || status=1; $(BIN)/mypy || status=1; exit $$status

bench: $(STAMP)
	$(BIN)/edgevlm bench

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: pip takes the local CPU wheel; an unpinned `torch` would pull a multi-GB CUDA build.
$(STAMP): | $(BIN)/python
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

$(MYPY_LINK): | $(BIN)/python
	mkdir -p $(dir $@)
	ln -sfn ../.. $@

# The browser tests drive Debian's Chromium (/usr/bin/chromium); Playwright's own download is not used.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
		else \
			echo "note: /usr/bin/chromium is missing (apt-get install chromium as root); browser tests will fail"; \
		fi; \
	fi

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
