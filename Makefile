# aiml021 — one entry point for every routine task. Everything installs itself on first use:
#   make demo   the main job (end-to-end split inference demo)
#   make test   all tests with coverage (what CI runs)
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
STAMP := $(VENV)/.installed
TSCLIENT := clients/typescript/node_modules/.package-lock.json
CONSOLE := console/dist/index.html

.PHONY: setup system-deps venv triton proto proto-check lint typecheck observability security check test ci demo bench mobile clean

## setup: everything the project needs on a fresh machine (idempotent).
setup: system-deps $(STAMP) $(BUF) $(TSCLIENT) $(CONSOLE) triton

# Debian packages: Fashion-MNIST data, protoc and the gRPC Java plugin for mobile stubs,
# PostgreSQL and Redis server binaries for the integration tests, DejaVu fonts for rendered frames,
# Prometheus (server and promtool) for the alert rules and their tests, nginx with its stream
# module for the replicas-behind-a-balancer tests (deploy/nginx).
system-deps:
	@need=()
	[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
	command -v protoc >/dev/null || need+=(protobuf-compiler)
	command -v grpc_java_plugin >/dev/null || need+=(protobuf-compiler-grpc-java-plugin)
	# the gRPC Java libraries the generated Java stubs compile against (Maven Central is not reachable)
	command -v javac >/dev/null || need+=(default-jdk-headless)
	[ -f /usr/share/java/grpc-stub.jar ] || need+=(libgrpc-java)
	[ -f /usr/share/java/protobuf.jar ] || need+=(libprotobuf-java)
	command -v redis-server >/dev/null || need+=(redis-server)
	[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
	[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
	command -v promtool >/dev/null || need+=(prometheus)
	command -v nginx >/dev/null || need+=(nginx-light)
	[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
	# headless Chromium for the operator console's browser tests (tests/e2e/test_console.py)
	command -v chromium >/dev/null || need+=(chromium)
	if [ $${#need[@]} -gt 0 ]; then
	  echo "installing Debian packages: $${need[*]}"
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$${need[@]}"
	fi

$(STAMP): requirements/lock.txt pyproject.toml
	[ -x $(VPY) ] || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements/lock.txt
	$(VPY) -m pip install -q --no-deps -e .
	$(VPY) -m pip check
	touch $@

venv: $(STAMP)

$(BUF): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# The TypeScript client's exact packages (clients/typescript/package-lock.json); its tests
# (tests/integration/clients) build it with tsc and run node's test runner against a gateway.
$(TSCLIENT): clients/typescript/package.json clients/typescript/package-lock.json
	cd clients/typescript && npm ci --no-audit --no-fund
	touch $(CURDIR)/$@  # .ONESHELL: the cd above still holds

# The operator console (console/package-lock.json, exact pins), built into console/dist, which the
# gateway serves at /console/; its browser tests run under pytest (tests/e2e/test_console.py).
# It bundles the typed REST client from clients/typescript (source + that package's modules).
$(CONSOLE): $(TSCLIENT) console/package.json console/package-lock.json $(shell find console/src console/index.html console/vite.config.ts -type f 2>/dev/null)
	cd console && npm ci --no-audit --no-fund && npm run build

## triton: a real Triton Inference Server (nvidia-pytriton) in its own venv.
triton:
	scripts/setup_triton.sh

## proto: regenerate Python code from proto/ (messages, gRPC stubs, .pyi).
proto: $(STAMP)
	scripts/gen_python.sh

## proto-check: generated code matches proto/.
proto-check: proto
	git diff --exit-code -- generated/ || { echo "generated/ is stale: run 'make proto' and commit"; exit 1; }
	test -z "$$(git status --porcelain -- generated/)" || { git status --porcelain -- generated/; echo "untracked generated files"; exit 1; }

## mobile: Kotlin/Java/Objective-C clients into build/mobile (Swift needs the Buf registry).
mobile: $(BUF)
	scripts/gen_mobile.sh build/mobile --offline

## lint: buf lint, buf breaking against the previous commit, ruff.
lint: $(STAMP) $(BUF)
	$(BUF) lint
	if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:proto 2>/dev/null; then
	  $(BUF) breaking --against '.git#ref=HEAD~1'
	else
	  echo "buf breaking: no previous commit with proto/, skipped"
	fi
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

## observability: Prometheus rules pass promtool (syntax and unit tests); dashboards and the
## generated tables of docs/observability.md are fresh.
observability: $(STAMP)
	promtool check config deploy/prometheus/prometheus.yml
	promtool test rules deploy/prometheus/tests/*.test.yml
	$(VPY) -m deploy.grafana --check

## security: bandit over the shipped packages; every medium/high finding that remains is
## explained where it is (a comment and `# nosec BXXX` on the line).
security: $(STAMP)
	$(VENV)/bin/bandit -q -ll -r common edge_agent cloud policy deploy

## check: everything CI checks besides the tests.
check: lint proto-check typecheck observability security

## test: all tests (unit, integration, e2e smoke) with a coverage report.
test: setup
	$(VPY) -m pytest -q -p no:cacheprovider --cov --cov-report=term --cov-report=xml --cov-fail-under=80

ci: test check

## demo: the main job — gateway + edge agent over the Fashion-MNIST test set, KPI table.
##       make demo WORKLOAD=ocr: a small OCR fleet on hard 720p frames, KPI table, PNG overlays.
WORKLOAD ?= fmnist
demo: setup
	$(VPY) -m benchmarks.e2e.demo --workload $(WORKLOAD)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .coverage coverage.xml
