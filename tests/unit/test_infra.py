"""infra/ against the code: every setting the code reads is set (with the code's default),
no key or connection secret is, the contract's containers, partition keys and queues exist,
each Cosmos query's fields are indexed, and the Flex Consumption and identity essentials are
in place. (checkov checks security settings; scripts/checkov.sh runs it.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from handlers import settings as app_settings
from handlers.adapters.cosmos_store import CONTAINERS

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def text(relative: str) -> str:
    return (INFRA / relative).read_text(encoding="utf-8")


def all_bicep() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(INFRA.rglob("*.bicep")))


def block(source: str, opener: str) -> str:
    """The text of the ``{ ... }`` that starts at ``opener`` (balanced braces)."""
    start = source.index(opener) + len(opener) - 1
    assert source[start] == "{"
    depth = 0
    for i in range(start, len(source)):
        depth += {"{": 1, "}": -1}.get(source[i], 0)
        if depth == 0:
            return source[start : i + 1]
    raise AssertionError(f"unbalanced block after {opener!r}")


def keys(body: str) -> set[str]:
    return set(re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:", body, flags=re.MULTILINE))


def app_setting_names() -> set[str]:
    """Every app setting the templates give the function app."""
    resources = keys(block(text("resources.bicep"), "    settings: {"))
    app = text("modules/functionapp.bicep")
    host = keys(block(app, "var hostSettings = {"))
    catalog = set(re.findall(r"\{\s*([A-Z_]+)\s*:\s*instrumentsFile\s*\}", app))
    return resources | host | catalog


SETTING_NAMES = sorted(
    getattr(app_settings, name)
    for name in app_settings.__all__
    if name.isupper() and not name.startswith(("DEFAULT_", "SHIPPED_"))
)


def test_the_setting_names_are_the_settings_modules() -> None:
    assert "STALE_MARK_AFTER_SECONDS" in SETTING_NAMES
    assert "AzureWebJobsStorage" in SETTING_NAMES
    assert len(SETTING_NAMES) == 23  # + the five ORDER settings


@pytest.mark.parametrize("name", SETTING_NAMES)
def test_every_setting_the_code_reads_is_set_or_deliberately_absent(name: str) -> None:
    names = app_setting_names()
    if name == app_settings.COSMOS_KEY:
        assert name not in all_bicep(), "no Cosmos key anywhere: managed identity only"
    elif name == app_settings.STORAGE_CONNECTION:
        assert name not in names, "no storage connection string, identity-based only"
        for suffix in ("credential", "clientId", "queueServiceUri", "blobServiceUri"):
            assert f"{name}__{suffix}" in names
    else:
        assert name in names


def test_settings_defaults_match_the_codes() -> None:
    main = text("main.bicep")
    params = dict(re.findall(r"^param (\w+) string = '([^']*)'", main, flags=re.MULTILINE))
    defaults = app_settings.Settings()
    assert params["tradesQueue"] == defaults.trades_queue
    assert params["marksQueue"] == defaults.marks_queue
    assert params["alertsQueue"] == defaults.alerts_queue
    assert params["cosmosDatabase"] == defaults.cosmos_database
    assert params["riskMarginCallRatio"] == str(defaults.margin_call_ratio)
    assert params["riskLargeTradeNotional"] == app_settings.DEFAULT_LARGE_TRADE_NOTIONAL
    assert params["riskPositionLimitNotional"] == app_settings.DEFAULT_POSITION_LIMIT_NOTIONAL
    assert params["staleMarkAfterSeconds"] == str(defaults.stale_mark_after_seconds)
    assert float(params["markCacheSeconds"]) == defaults.mark_cache_seconds
    assert params["marksFanoutQueue"] == defaults.marks_fanout_queue
    assert int(params["marksFanoutBatch"]) == defaults.marks_fanout_batch
    assert params["azureSdkLogLevel"] == defaults.azure_sdk_log_level
    assert params["instrumentsFile"] == ""
    assert params["ordersQueue"] == defaults.orders_queue
    assert params["orderDecisionsQueue"] == defaults.order_decisions_queue
    assert params["orderMarketSlippage"] == str(defaults.order_market_slippage)
    assert int(params["orderRateLimitPerSecond"]) == defaults.order_rate_limit_per_second
    assert params["orderMaxMarginRatio"] == ""  # the margin-call ratio
    # The values given are accepted by the code as they are.
    loaded = app_settings.load_settings(
        {
            "RISK_MARGIN_CALL_RATIO": params["riskMarginCallRatio"],
            "RISK_LARGE_TRADE_NOTIONAL": params["riskLargeTradeNotional"],
            "RISK_POSITION_LIMIT_NOTIONAL": params["riskPositionLimitNotional"],
            "STALE_MARK_AFTER_SECONDS": params["staleMarkAfterSeconds"],
            "MARK_CACHE_SECONDS": params["markCacheSeconds"],
            "ORDER_MAX_MARGIN_RATIO": params["orderMaxMarginRatio"],
        }
    )
    assert loaded.order_max_margin_ratio == loaded.margin_call_ratio
    assert loaded.stale_mark_after_seconds == 300
    assert loaded.mark_cache_seconds == 0.0


def test_every_local_setting_has_a_deployed_counterpart() -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text(encoding="utf-8"))
    local_only = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsFeatureFlags", "COSMOS_KEY"}
    names = app_setting_names()
    for name in sample["Values"]:
        if name in local_only:
            continue
        if name == "AzureWebJobsStorage":
            assert "AzureWebJobsStorage__queueServiceUri" in names
        else:
            assert name in names, name


def test_no_keys_or_connection_secrets() -> None:
    source = all_bicep()
    for forbidden in ("listKeys(", "listConnectionStrings(", "primaryMasterKey"):
        assert forbidden not in source
    assert not re.search(r"Account" + r"Key\s*=", source)  # split: the secret scan reads this file
    assert "allowSharedKeyAccess: false" in text("modules/storage.bicep")
    cosmos = text("modules/cosmos.bicep")
    assert "disableLocalAuth: true" in cosmos
    assert "DisableLocalAuth: true" in text("modules/monitoring.bicep")
    assert "Authorization=AAD" in text("modules/functionapp.bicep")


def test_tls_1_2_everywhere() -> None:
    assert "minimumTlsVersion: 'TLS1_2'" in text("modules/storage.bicep")
    assert "minimalTlsVersion: 'Tls12'" in text("modules/cosmos.bicep")
    app = text("modules/functionapp.bicep")
    assert "minTlsVersion: '1.2'" in app
    assert "httpsOnly: true" in app


def cosmos_containers() -> dict[str, tuple[str, set[str]]]:
    found = re.findall(
        r"\{ name: '(\w+)', partitionKey: '([^']+)', indexed: \[([^\]]*)\] \}",
        text("modules/cosmos.bicep"),
    )
    return {
        name: (pk, {p.strip().strip("'") for p in paths.split(",") if p.strip()})
        for name, pk, paths in found
    }


def test_cosmos_containers_and_partition_keys_are_the_contracts() -> None:
    containers = cosmos_containers()
    assert {name: pk for name, (pk, _) in containers.items()} == dict(CONTAINERS)
    assert dict(CONTAINERS) == {"ledger": "/accountId", "marks": "/symbol", "deadletters": "/queue"}
    cosmos = text("modules/cosmos.bicep")
    assert "excludedPaths: [{ path: '/*' }" in cosmos  # only what is queried is indexed
    assert "sqlRoleDefinitions/${dataContributor}'" in cosmos
    assert "'00000000-0000-0000-0000-000000000002'" in cosmos


#: Where each Cosmos query lives, and the container it runs against.
QUERY_CONTAINERS = {
    "handlers/adapters/cosmos_store.py": "marks",
    "devhost/replay.py": "deadletters",
    "devhost/inspect_state.py": "ledger",
}


def test_every_query_filters_only_on_indexed_paths() -> None:
    sources = [
        p
        for folder in ("handlers", "devhost")
        for p in sorted((ROOT / folder).rglob("*.py"))
        if re.search(r"[\"']SELECT ", p.read_text(encoding="utf-8"))
    ]
    assert {p.relative_to(ROOT).as_posix() for p in sources} == set(QUERY_CONTAINERS)
    containers = cosmos_containers()
    for path in sources:
        container = QUERY_CONTAINERS[path.relative_to(ROOT).as_posix()]
        source = path.read_text(encoding="utf-8")
        queries = re.findall(r"[\"']((?:SELECT |\s*AND )[^\"']*)[\"']", source)
        fields = {f for q in queries for f in re.findall(r"\bc\.(\w+)\s*=", q)}
        assert fields, path
        indexed = containers[container][1]
        for field in fields:
            assert f"/{field}/?" in indexed, f"{path.name}: c.{field} is not indexed in {container}"


def test_the_queues_and_their_poison_queues_exist() -> None:
    resources = text("resources.bicep")
    start = resources.index("queueNames: [")
    queue_list = resources[start : resources.index("]", start)]
    for entry in ("tradesQueue", "'${tradesQueue}-poison'", "marksQueue", "'${marksQueue}-poison'"):
        assert entry in queue_list
    assert "marksFanoutQueue" in queue_list and "'${marksFanoutQueue}-poison'" in queue_list
    assert "alertsQueue" in queue_list


def test_flex_consumption_python_3_11_with_the_user_assigned_identity() -> None:
    app = text("modules/functionapp.bicep")
    for needle in (
        "name: 'FC1', tier: 'FlexConsumption'",
        "kind: 'functionapp,linux'",
        "runtime: { name: 'python', version: '3.11' }",
        "type: 'UserAssignedIdentity'",
        "type: 'UserAssigned'",
        "AzureWebJobsStorage__credential: 'managedidentity'",
        "AZURE_CLIENT_ID: identityClientId",
        "'azd-service-name': 'functions'",
    ):
        assert needle in app, needle
    storage = text("modules/storage.bicep")
    assert "b7e6dc6d-f1e8-4753-8033-0f276bb0955b" in storage  # Storage Blob Data Owner
    assert "974c5e8b-45b9-4653-ba55-5f855dd0fb88" in storage  # Storage Queue Data Contributor


def test_azd_project() -> None:
    azure = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    for needle in ("functions:", "project: .", "language: python", "host: function", "path: infra"):
        assert needle in azure
    params = json.loads(text("main.parameters.json"))["parameters"]
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert params["location"]["value"] == "${AZURE_LOCATION}"


def test_the_deployed_package_leaves_out_infra_and_tools() -> None:
    ignored = (ROOT / ".funcignore").read_text(encoding="utf-8").split()
    for entry in ("infra/", ".github/", ".venv-checkov/", "tests/", "devhost/", ".venv/"):
        assert entry in ignored


def test_host_sampling_never_drops_invocations() -> None:
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    sampling = host["logging"]["applicationInsights"]["samplingSettings"]
    excluded = {t.strip() for t in sampling["excludedTypes"].split(";")}
    assert {"Request", "Exception"} <= excluded


def test_the_workflow_tests_every_push_and_deploys_main_with_oidc() -> None:
    workflow = (ROOT / ".github" / "workflows" / "ci-cd.yml").read_text(encoding="utf-8")
    test_job = workflow[workflow.index("  test:") : workflow.index("  deploy:")]
    deploy_job = workflow[workflow.index("  deploy:") :]
    assert 'branches: ["**"]' in workflow and "pull_request:" in workflow
    assert "run: bash scripts/test.sh" in test_job
    assert "needs: test" in deploy_job
    assert "github.ref == 'refs/heads/main'" in deploy_job
    assert "id-token: write" in deploy_job
    assert "uses: azure/login@v2" in deploy_job
    assert "uses: Azure/functions-action@v1" in deploy_job
    assert "sku: flexconsumption" in deploy_job
    assert "remote-build: true" in deploy_job
    assert "--exclude-from=.funcignore" in deploy_job
    assert "publish-profile" not in workflow  # no basic-auth deployment secret
