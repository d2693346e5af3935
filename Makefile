# mqttlb: the two commands are `make stack-up` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# make stack-up NODES=5 BROKER=hivemq (any stack setting can also come from MQTTLB_* variables)
NODES ?=
export NODES
# mosquitto (the stack file's default) or hivemq: HiveMQ CE nodes; the install step then builds brokers/hivemq
BROKER ?=
export BROKER

.PHONY: help install plugin stack-up stack-down stack-status test test-slow test-hivemq lint typecheck rules compose dashboards dashboard-images experiment test-scenarios bench clean helm chart

help:
	@echo "make stack-up       install what is missing, start the local stack, print addresses (NODES=n, BROKER=hivemq)"
	@echo "make plugin         (re)build the Mosquitto eviction plugin into $(VENV)/lib/mqttlb/ (install does it too)"
	@echo "make stack-down     stop every process the stack started"
	@echo "make stack-status   one line per component, then the rebalancer per node (mqttlb status), always both; exit 2 if either fails"
	@echo "make test           install what is missing, lint, type-check and run the whole test suite"
	@echo "make test-slow      the slow live tests: HA pair, end-to-end alert loop, SIGKILL sweep (~4.5 min)"
	@echo "make test-hivemq    build the HiveMQ extension and launcher (Maven) and run the live HiveMQ tests (~3 min)"
	@echo "make rules          regenerate rules/ from mqttlb/params.yaml"
	@echo "make compose        regenerate stack/docker-compose.yml and stack/compose/ (Docker path), build the mqttlb HiveMQ extension into its image's context"
	@echo "make dashboards     regenerate dashboards/generated/ from dashboards/*.py"
	@echo "make chart          regenerate the Helm chart's files (deploy/helm/mqttlb/files/) from the same sources"
	@echo "make helm           build helm $(HELM_VERSION) from the Go module proxy into $(VENV)/bin (make test does it when missing)"
	@echo "make dashboard-images  draw the dashboards of a loaded throwaway stack into docs/images/ (~4 min)"
	@echo "make experiment SCENARIO=<name> SEEDS=1,2,3 [POLICIES=...] [PARAMS=shipped|fast]  run a named scenario"
	@echo "                    under each policy and seed (report in reports/experiment-<name>/); scenarios: gateway-sites"
	@echo "                    (default), heterogeneous, pareto, slow-churn, restart-pileup(-long), flash-crowd, even-load; ~2.7 min per run"
	@echo "make test-scenarios the restart-pileup smoke run on real stacks (~1.5 min; the pareto one is in make test)"
	@echo "make bench          run the benchmarks in bench/ and print figures"

install:
	@bash stack/install.sh

plugin:
	$(MAKE) -C brokers/mosquitto-plugin VENV=$(abspath $(VENV))

stack-up: install
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m mqttlb.cli stack up

stack-down:
	@$(PY) -m mqttlb.cli stack down

# Both views, whatever the first says; the recipe fails (make exits 2) when either command did.
stack-status:
	@$(PY) -m mqttlb.cli stack status; s=$$?; echo; \
	$(PY) -m mqttlb.cli status $(if $(MQTTLB_STATE_DIR),--state-dir $(MQTTLB_STATE_DIR)); t=$$?; \
	test $$s -eq 0 && test $$t -eq 0

lint: install
	$(PY) -m ruff check .

typecheck: install
	$(PY) -m mypy mqttlb bench

test: install lint typecheck helm
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -ra -m "not hivemq and not scenario and not slow"

# The slow live tests (`-m slow`, about 4.5 min): the Alertmanager HA pair, the end-to-end alert loop, a hot
# broker's alert into Alertmanager and the SIGKILL sweep of the publish path.
test-slow: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -ra -m "slow and not hivemq and not scenario"

# The restart-pileup smoke run of the scenario runner (tests/test_scenarios_live.py, about 1.5 min); the short
# pareto run, the benchmark's short variant, is in `make test`.
test-scenarios: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -ra -m scenario

# The live HiveMQ tests (tests/test_hivemq_live.py): the install step builds brokers/hivemq first.
test-hivemq:
	@MQTTLB_HIVEMQ=1 bash stack/install.sh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -ra -m hivemq

rules: install
	$(PY) -m mqttlb.cli rules generate --out rules/

# The compose files, then the mqttlb HiveMQ extension folder (Maven, brokers/hivemq) copied into the HiveMQ
# image's build context, where `docker compose build` finds it (stack/compose/hivemq/mqttlb-extension/: not committed).
compose:
	@MQTTLB_HIVEMQ=1 bash stack/install.sh
	$(PY) -m mqttlb.stack.compose_render
	rm -rf stack/compose/hivemq/mqttlb-extension
	cp -R brokers/hivemq/target/mqttlb-extension/mqttlb-extension stack/compose/hivemq/mqttlb-extension

dashboards: install
	$(PY) -m mqttlb.cli dashboards generate

# The Helm chart's generated files (rules, dashboards, configs, Envoy bootstrap, Alertmanager routes).
chart: install
	$(PY) -m mqttlb.deploy.helm_render

# helm, for the chart's tests (tests/test_helm_chart.py: helm lint, helm template), built from the Go module proxy.
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
# The -X flags are those of helm's own release build: its version, and the Kubernetes version `helm template`
# assumes without --kube-version (that of its client-go, v0.37 -> 1.37).
HELM_VERSION := v3.22.0
HELM_LDFLAGS := -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37 \
  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37
helm: $(VENV)/bin/helm
$(VENV)/bin/helm:
	GOBIN="$(abspath $(VENV)/bin)" GOFLAGS=-buildvcs=false "$(GO)" install -ldflags "$(HELM_LDFLAGS)" \
	  helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

dashboard-images: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m mqttlb.dashboards.snapshot --out docs/images

# make experiment SCENARIO=<name> SEEDS=1,2,3 POLICIES=a,b PARAMS=shipped|fast (mqttlb/loadgen/scenarios/)
SCENARIO ?= gateway-sites
SEEDS ?= 1,2,3
POLICIES ?=
PARAMS ?= shipped
experiment: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m mqttlb.cli experiment --scenario $(SCENARIO) --seeds $(SEEDS) \
	  --params $(PARAMS) $(if $(POLICIES),--policies $(POLICIES)) --out reports/experiment-$(SCENARIO)

bench: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" sh -c 'for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done'

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache
