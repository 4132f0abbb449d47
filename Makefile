# Two commands do everything on a fresh machine:
#   make run    start the whole product with the demo portfolio (Ctrl-C stops it)
#   make test   run the whole test suite
.PHONY: setup run test train eval bench bench-scale-out bench-engine soak plots clean

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

# The load suite (docs/performance.md): one table of webhook acknowledgement, end-to-end
# reply latency vs the raw engine, Rasa's built-in Twilio channel, campaign planning and
# memory (~25 min). bench-scale-out: the same with 2 of every process; soak: 30 minutes.
bench: setup
	.venv/bin/python bench/load.py

bench-scale-out: setup
	.venv/bin/python bench/load.py --scale-out --phases ack e2e

soak: setup
	.venv/bin/python bench/soak.py

plots: setup
	.venv/bin/python bench/plots.py

bench-engine: setup
	.venv/bin/python bench/engine_latency.py

clean:
	rm -rf .run models test-artifacts
