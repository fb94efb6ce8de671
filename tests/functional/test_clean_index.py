"""The app imports and indexes the way the Python worker does, from a clean interpreter.

A fresh venv gets only ``requirements.txt`` (what Azure's remote build installs); the app is
copied as it is deployed (``.funcignore`` applied), and a subprocess of that interpreter, in
an empty environment, does what the worker's ``index_function_app`` does: import
``function_app``, find its one ``FunctionRegister``, call ``get_functions()`` and build each
function's metadata (``get_function_json()``, the raw bindings). So a runtime import of a
dev-only package, of a module the deployment leaves out (``devhost``, ``tests``), or a
setting read at import time fails here before it fails in Azure.

The venv is kept under ``.run/`` keyed by the hash of requirements.txt and the Python
version, so only the first run after a change pays for the install (pip's cache is used).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.functional.test_function_app import EXPECTED

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import importlib, inspect, json, sys
app_dir = sys.argv[1]
sys.path.insert(0, app_dir)
before = set(sys.modules)
module = importlib.import_module("function_app")
from azure.functions import FunctionRegister
apps = [getattr(module, n) for n in module.__dir__() if isinstance(getattr(module, n, None), FunctionRegister)]
if len(apps) != 1:
    raise SystemExit(f"expected one FunctionRegister in function_app, found {len(apps)}")
loaded = set(sys.modules) - before
out = {"functions": {}, "modules": sorted({m.split(".")[0] for m in loaded})}
# An asyncio Azure SDK client needs an async transport at run time (aiohttp), which the
# import alone does not load.
out["aio_sdks"] = sorted(m for m in loaded if m.startswith("azure.") and m.endswith(".aio"))
try:
    import aiohttp  # noqa: F401
    out["aiohttp"] = True
except ImportError:
    out["aiohttp"] = False
for function in apps[0].get_functions():
    user = function.get_user_function()
    out["functions"][function.get_function_name()] = {
        "function_json": json.loads(function.get_function_json()),
        "raw_bindings": [json.loads(b) for b in function.get_raw_bindings()],
        "params": list(inspect.signature(user).parameters),
        "is_async": inspect.iscoroutinefunction(user),
    }
print(json.dumps(out))
"""

#: What a deployment must never import at start-up.
DEV_ONLY = {"pytest", "hypothesis", "jsonschema", "ruff", "mypy", "devhost", "tests", "bench"}


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def clean_venv() -> Path:
    """A venv with only requirements.txt installed (built once per requirements hash).

    Raises:
        subprocess.CalledProcessError: the venv or the install failed.
    """
    key = hashlib.sha256(
        (ROOT / "requirements.txt").read_bytes() + sys.version.encode()
    ).hexdigest()[:16]
    venv = ROOT / ".run" / f"clean-venv-{key}"
    done = venv / ".installed"
    if done.exists():
        return venv
    scratch = venv.with_name(f"{venv.name}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(scratch)], check=True)
    subprocess.run(
        [
            str(_venv_python(scratch)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(ROOT / "requirements.txt"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    (scratch / ".installed").write_text(key, encoding="utf-8")
    shutil.rmtree(venv, ignore_errors=True)
    scratch.rename(venv)  # the interpreter is a symlink: the venv survives the move
    for stale in venv.parent.glob("clean-venv-*"):  # venvs of older requirements
        if stale != venv and ".tmp-" not in stale.name:
            shutil.rmtree(stale, ignore_errors=True)
    return venv


def funcignored(relative: str, patterns: list[str]) -> bool:
    """Whether ``.funcignore`` (gitignore-style: ``dir/``, names, globs) leaves a path out."""
    parts = relative.split("/")
    for pattern in patterns:
        if pattern.endswith("/"):
            name = pattern.rstrip("/")
            if any(fnmatch.fnmatch(part, name) for part in parts[:-1]):
                return True
        elif "/" in pattern:
            if fnmatch.fnmatch(relative, pattern.lstrip("/")):
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in parts):
            return True
    return False


def deployed_copy(target: Path) -> Path:
    """Copy the app as a deployment would ship it (``.funcignore`` applied, no caches)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for relative in listed:
        if funcignored(relative, patterns) or "__pycache__" in relative:
            continue
        source = ROOT / relative
        if not source.is_file():
            continue
        dest = target / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
    return target


#: The settings without which the app refuses to load (storage and Cosmos DB).
REQUIRED_SETTINGS = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "COSMOS_ENDPOINT": "https://127.0.0.1:8081/",
}


def probe(venv: Path, app_dir: Path) -> subprocess.CompletedProcess[str]:
    """Index ``app_dir`` with the clean interpreter, in an environment of the required
    settings only."""
    env = {"PATH": os.defpath, "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env |= REQUIRED_SETTINGS  # what a deployment always sets (the app checks it at import)
    return subprocess.run(
        [str(_venv_python(venv)), "-I", "-c", PROBE, str(app_dir)],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def venv() -> Path:
    return clean_venv()


@pytest.fixture(scope="module")
def indexed(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app_dir = deployed_copy(tmp_path_factory.mktemp("deployed"))
    result = probe(venv, app_dir)
    assert result.returncode == 0, f"the app does not index cleanly:\n{result.stderr[-4000:]}"
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def test_the_clean_venv_has_no_dev_packages(venv: Path) -> None:
    found = subprocess.run(
        [str(_venv_python(venv)), "-I", "-c", "import pytest"], capture_output=True, text=True
    )
    assert found.returncode != 0


def test_the_deployment_copy_leaves_out_tools_and_infra(tmp_path: Path) -> None:
    app_dir = deployed_copy(tmp_path)
    assert (app_dir / "function_app.py").is_file()
    assert (app_dir / "host.json").is_file()
    assert (app_dir / "requirements.txt").is_file()
    assert (app_dir / "handlers" / "data" / "instruments.json").is_file()
    for left_out in (
        "devhost",
        "tests",
        "bench",
        "infra",
        "docs",
        ".github",
        "local.settings.json",
    ):
        assert not (app_dir / left_out).exists(), left_out


def test_every_function_indexes_with_its_bindings(indexed: dict[str, Any]) -> None:
    functions = indexed["functions"]
    assert set(functions) == set(EXPECTED)
    for name, meta in functions.items():
        assert meta["raw_bindings"] == EXPECTED[name], name
        assert meta["function_json"]["bindings"] == EXPECTED[name], name
        bound = {b["name"] for b in meta["raw_bindings"]}
        # Every parameter is a binding, or the worker's own ``context``.
        assert set(meta["params"]) - {"context"} == bound, name


def test_queue_names_are_setting_expressions_or_the_orders_default(
    indexed: dict[str, Any],
) -> None:
    """Every queue name is a ``%SETTING%`` expression, but the orders queue's: a
    deployment without ``ORDERS_QUEUE`` (as this probe's) gets the literal default."""
    queues = {
        b["queueName"]
        for meta in indexed["functions"].values()
        for b in meta["raw_bindings"]
        if b["type"] == "queueTrigger"
    }
    assert queues == {
        "%TRADES_QUEUE%",
        "%MARKS_QUEUE%",
        "%TRADES_QUEUE%-poison",
        "%MARKS_QUEUE%-poison",
        "%MARKS_QUEUE%-fanout",
        "%MARKS_QUEUE%-fanout-poison",
        "orders",
        "orders-poison",
    }


def test_nothing_dev_only_is_imported(indexed: dict[str, Any]) -> None:
    assert not DEV_ONLY & set(indexed["modules"])
    assert "azure" in indexed["modules"]


def test_async_functions_have_the_async_sdk_transport(indexed: dict[str, Any]) -> None:
    """``async def`` functions use the asyncio SDK clients, whose transport is aiohttp: it
    must come with requirements.txt (the import alone does not need it)."""
    is_async = any(meta["is_async"] for meta in indexed["functions"].values())
    if is_async and indexed["aio_sdks"]:
        assert indexed["aiohttp"], (
            f"{indexed['aio_sdks']} are used, but aiohttp (their transport) is not in "
            "requirements.txt: the first Cosmos or queue call would fail in Azure"
        )


def test_a_dev_only_import_fails_the_index(venv: Path, tmp_path: Path) -> None:
    app_dir = deployed_copy(tmp_path)
    source = (app_dir / "function_app.py").read_text(encoding="utf-8")
    (app_dir / "function_app.py").write_text("import jsonschema\n" + source, encoding="utf-8")
    result = probe(venv, app_dir)
    assert result.returncode != 0
    assert "No module named 'jsonschema'" in result.stderr


def test_a_left_out_module_fails_the_index(venv: Path, tmp_path: Path) -> None:
    app_dir = deployed_copy(tmp_path)
    source = (app_dir / "function_app.py").read_text(encoding="utf-8")
    (app_dir / "function_app.py").write_text("import devhost\n" + source, encoding="utf-8")
    result = probe(venv, app_dir)
    assert result.returncode != 0
    assert "No module named 'devhost'" in result.stderr
