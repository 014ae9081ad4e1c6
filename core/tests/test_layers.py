"""The app layers: `make lint` checks them with import-linter (CI runs it), its contracts cover
every app of this repository, and the README's diagram is the real import graph between apps.
The graph here is read from the source (every import statement, those inside functions too), so it
does not depend on import-linter seeing what we think it sees."""

import ast
import configparser
import re
from pathlib import Path

from django.apps import apps
from django.conf import settings

from core.tests.test_project_files import make_target

ROOT = Path(settings.BASE_DIR)


def local_packages() -> set[str]:
    """The top-level packages of this repository that are Django apps, plus config."""
    return {config.name.split(".")[0] for config in apps.get_app_configs()
            if Path(config.path).resolve().parent == ROOT.resolve()} | {"config"}


def import_graph() -> dict[str, set[str]]:
    """Package -> the other local packages its code imports (tests and migrations left out)."""
    packages = local_packages()
    graph: dict[str, set[str]] = {package: set() for package in packages}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).parts
            if "tests" in parts or "migrations" in parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:  # a relative import stays inside its package
                    continue
                graph[package] |= {name.split(".")[0] for name in names} & (packages - {package})
    return graph


def importlinter() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    return config


def test_make_lint_checks_the_import_rules_and_ci_runs_it():
    assert re.search(r"^\t\$\(VENV\)/bin/lint-imports\b", make_target("lint"), re.MULTILINE)
    assert re.search(r"^make lint$", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)


def test_the_contracts_cover_every_app_and_ignore_only_tests():
    """An app left out of .importlinter would escape the layers; an ignore would silence them."""
    config = importlinter()
    packages = local_packages()
    assert set(config["importlinter"]["root_packages"].split()) == packages | {"tests"}
    layered = config["importlinter:contract:apps-layered"]
    assert layered["type"] == "layers"
    layers = [set(re.split(r"\s*\|\s*", line.strip())) for line in layered["layers"].strip().splitlines()]
    assert set().union(*layers) == packages and sum(map(len, layers)) == len(packages)
    assert layers[-1] == {"core"}
    assert [line.strip() for line in layered["ignore_imports"].strip().splitlines()] == ["**.tests.** -> **"]
    acyclic = config["importlinter:contract:acyclic"]
    assert acyclic["type"] == "acyclic_siblings"
    assert packages | {"core.cache", "core.http"} <= set(acyclic["ancestors"].split())


def test_a_contract_forbids_test_code_in_every_app():
    """tests/ is a root package and conftest an external module so that the contract has them in
    its graph: import-linter passes a forbidden module it cannot find."""
    config = importlinter()
    forbidden = config["importlinter:contract:no-test-code-in-product"]
    assert forbidden["type"] == "forbidden"
    assert set(forbidden["source_modules"].split()) == local_packages()
    assert set(forbidden["forbidden_modules"].split()) == {"conftest", "tests", "**.tests"}
    assert config["importlinter"].getboolean("include_external_packages")
    assert [line.strip() for line in forbidden["ignore_imports"].strip().splitlines()] == ["**.tests.** -> **"]


def product_imports() -> list[tuple[str, str]]:
    """(file, imported module) for every absolute import of the product code (tests left out)."""
    found = []
    for package in local_packages():
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT)
            if "tests" in relative.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found += [(str(relative), alias.name) for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.append((str(relative), node.module))
    return found


def test_no_product_module_imports_test_code():
    """Test support lives in tests/support, beside the tests; product code never reaches into it."""
    assert [(path, name) for path, name in product_imports()
            if name.split(".")[0] in ("conftest", "tests") or "tests" in name.split(".")] == []
    assert sorted(str(path.relative_to(ROOT)) for package in local_packages()
                  for path in (ROOT / package).rglob("testing.py")) == []


def test_apps_and_the_http_plumbing_reach_the_engine_through_its_api_alone():
    """Every app and core.http import core.cache.api and nothing else of the engine, so the engine
    can be rearranged behind it. The settings (which build the client), the ops commands, the admin
    page and core's app config are the engine's own wiring and may reach further."""
    contract = importlinter()["importlinter:contract:cache-engine-api"]
    assert contract["type"] == "forbidden"
    assert set(contract["source_modules"].split()) == (local_packages() - {"core", "config"}) | {"core.http"}
    assert contract["forbidden_modules"].split() == ["core.cache.*"]
    assert [line.strip() for line in contract["ignore_imports"].strip().splitlines()] == ["** -> core.cache.api"]
    held = [(path, name) for path, name in product_imports()
            if not path.startswith(("core/", "config/")) or path.startswith("core/http/")]
    assert [(path, name) for path, name in held if name.startswith("core.cache") and name != "core.cache.api"] == []


TOPOLOGY_SETTINGS = {"REDIS_CLUSTER_NODES", "REDIS_SENTINELS", "REDIS_SENTINEL_SERVICE", "REDIS_SENTINEL_USERNAME",
                     "REDIS_SENTINEL_PASSWORD", "REDIS_SENTINEL_TLS"}


def topology_reads(path: Path) -> list[str]:
    """What this module reads of the topology: a topology setting (``settings.REDIS_SENTINELS``,
    ``env("REDIS_SENTINELS")``, ``getattr(settings, ...)``) or the choice recorded in the cache's
    options (``options["TOPOLOGY"]``, ``.get("TOPOLOGY")``). Messages naming a setting are not reads."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in TOPOLOGY_SETTINGS:
            found.append(node.attr)
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "TOPOLOGY":
            found.append('["TOPOLOGY"]')
        elif isinstance(node, ast.Call) and node.args:
            by_getattr = isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) > 1
            name = node.args[1] if by_getattr else node.args[0]
            if isinstance(name, ast.Constant) and name.value in TOPOLOGY_SETTINGS | {"TOPOLOGY"}:
                found.append(f"{ast.unparse(node.func)}({name.value!r})")
    return found


def test_only_the_topology_reads_the_topology_settings():
    """The settings declare them and hand them to ``configure_cache`` once; topology.py records the
    choice in the cache's options and answers for it (``TOPOLOGY``). Only the cluster's connection
    factory, which builds the client from those options, reads the record too (its seed nodes)."""
    readers = {}
    for package in local_packages():
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT)
            if "tests" not in relative.parts and (reads := topology_reads(path)):
                readers[str(relative)] = sorted(set(reads))
    assert {path for path in readers if not path.startswith("config/settings/")} == {
        "core/cache/topology.py", "core/cache/cluster.py"}, readers
    assert readers["core/cache/cluster.py"] == ['["TOPOLOGY"]']


def test_core_shows_its_parts():
    """core is the cache engine (core/cache), the HTTP/API plumbing (core/http), the job plumbing
    (core/jobs: queueing, retries, the model providers' client) and the Django app around them;
    test support is not in it."""
    core = ROOT / "core"
    assert all((core / part / "__init__.py").is_file() for part in ("cache", "http", "jobs"))
    modules = {path.name for path in core.glob("*.py")}
    assert modules == {"__init__.py", "apps.py", "models.py", "admin.py", "metrics.py", "clock.py"}
    assert (ROOT / "tests" / "support" / "__init__.py").is_file()
    parts = importlinter()["importlinter:contract:core-parts"]
    assert parts["type"] == "layers" and parts["containers"].split() == ["core"]
    assert parts["layers"].split() == ["http", "cache"]


def test_the_layering_rules_hold_in_the_source():
    graph = import_graph()
    assert graph["core"] == set()  # core is mechanics only
    for lower in ("accounts", "characters"):
        assert not graph[lower] & {"chat", "generation", "subscriptions", "payments", "demo"}, lower
    assert "generation" not in graph["chat"] and "chat" not in graph["generation"]
    assert not any("demo" in imported for imported in graph.values())  # demo data is imported by nothing


def test_there_is_no_import_cycle_between_apps():
    graph = import_graph()
    done: set[str] = set()

    def visit(package: str, path: tuple[str, ...]) -> None:
        assert package not in path, " -> ".join((*path, package))
        if package not in done:
            for imported in sorted(graph[package]):
                visit(imported, (*path, package))
            done.add(package)

    for package in sorted(graph):
        visit(package, ())


def readme_app_diagram() -> set[tuple[str, str]]:
    """The arrows (A --> B, A & B --> C & D) of the first mermaid chart of the README's architecture."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Architecture"):]
    chart = section[section.index("```mermaid"):]
    chart = chart[:chart.index("```", 3)]
    edges = set()
    for line in chart.splitlines():
        if "-->" not in line:
            continue
        left, right = line.split("-->")
        sources = [re.match(r"\s*(\w+)", part).group(1) for part in left.split("&")]
        targets = [re.match(r"\s*(\w+)", part).group(1) for part in right.split("&")]
        edges |= {(source, target) for source in sources for target in targets}
    return edges


def test_the_readme_diagram_is_the_import_graph():
    """Every arrow is a real import and every import between apps is an arrow; imports of core
    (every app has them) are left to the prose."""
    graph = import_graph()
    real = {(package, imported) for package, imports in graph.items() for imported in imports}
    drawn = readme_app_diagram()
    assert {edge for edge in drawn if edge[1] != "core"} == {edge for edge in real if edge[1] != "core"}
    assert {edge for edge in drawn if edge[1] == "core"} <= real


def string_constants(path: Path) -> list[str]:
    """The string literals of a module, docstrings left out (they may show an example key)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_core_names_no_family_of_an_app():
    """Ops commands, the key table and the admin page work from the registry alone: no key of an
    app's family is spelled out in core's code."""
    from core.cache.registry import FAMILIES

    needles = {family.template.partition("{")[0] or family.template for family in FAMILIES.values()}
    found = [(str(path.relative_to(ROOT)), text) for path in (ROOT / "core").rglob("*.py")
             if "tests" not in path.parts for text in string_constants(path)
             if any(needle in text for needle in needles)]
    assert found == []
