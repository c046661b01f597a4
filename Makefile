# Thin wrappers around scripts/ (which need only sh and python3).
PORTS ?= 7777,8888
ARGS ?=

.PHONY: setup run demo test mypy bench clean

setup:
	sh scripts/setup.sh

run:
	sh scripts/run.sh --ports $(PORTS) $(ARGS)

demo:
	sh scripts/demo.sh

test:
	sh scripts/test.sh

mypy: setup
	.venv/bin/mypy

bench: setup
	sh scripts/system-deps.sh tcpdump
	.venv/bin/pip install -q -e '.[bench]' --config-settings editable_mode=compat
	.venv/bin/python bench/run.py $(ARGS)

clean:
	rm -rf .venv build *.egg-info _trial_temp .mypy_cache
