# Two commands do everything on a fresh machine:
#   make run    start the whole product with the demo portfolio (Ctrl-C stops it)
#   make test   run the whole test suite
.PHONY: setup run test train eval bench clean

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/nudge up

# The model is trained (or found in the cache) before pytest starts, so a first training on a
# fresh machine does not count against any test's time limit.
test: setup
	.venv/bin/nudge train
	.venv/bin/python -m pytest

train: setup
	.venv/bin/nudge train

eval: setup
	.venv/bin/python -m service.nlu_eval --start-engine

bench: setup
	.venv/bin/python bench/engine_latency.py

clean:
	rm -rf .run models test-artifacts
