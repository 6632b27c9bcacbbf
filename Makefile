# One line of recipe each; settings for the tools live in pyproject.toml.
PY := .venv/bin/python
FDT := .venv/bin/fastdowntime

.PHONY: install demo test unit integration bench lint clean sandbox-down

install: .venv/.installed
	@tools/install-system-packages
	@tools/install-other-pythons

.venv/.installed: pyproject.toml
	python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[dev]' && touch $@

demo: install
	tools/demo

test: install
	$(PY) -m pytest -q

unit: install
	$(PY) -m pytest -q tests/unit

integration: install
	$(PY) -m pytest -q tests/integration tests/e2e

bench: install
	$(PY) -m bench

lint: install
	.venv/bin/ruff check orchestrator tests bench && .venv/bin/mypy

sandbox-down: install
	$(FDT) sandbox down

clean:
	-[ -x $(FDT) ] && $(FDT) sandbox down; rm -rf .venv .venv-py3.* .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
