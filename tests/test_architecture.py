"""The house plan (docs/architecture.md), checked on the source: who may import whom."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("core", "ingest", "dashboard", "api", "cli")


def module_deps(tree: ast.AST, modules: set[str]) -> set[str]:
    """Every module a parsed file imports (ours and third-party), lazily or not; `from pkg
    import module` counts as importing that module, not only the package."""
    deps = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            deps.add(n.module)
            deps.update(m for a in n.names if (m := f"{n.module}.{a.name}") in modules)
        elif isinstance(n, ast.Import):
            deps.update(a.name for a in n.names)
    return deps


def imports() -> dict[str, set[str]]:
    """module → every module it imports."""
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for top in OURS for p in (ROOT / top).rglob("*.py")}
    return {name: module_deps(ast.parse(p.read_text()), set(files)) for name, p in files.items()}


def top(module: str) -> str:
    return module.split(".")[0]


def test_core_imports_only_core_and_never_torch_or_streamlit():
    bad = {m: sorted(d for d in deps if top(d) in OURS and top(d) != "core"
                     or top(d) in ("torch", "streamlit", "funasr"))
           for m, deps in imports().items() if top(m) == "core"}
    assert {m: d for m, d in bad.items() if d} == {}


# core's rooms, each with the rooms it may import (docs/architecture.md, core/__init__.py).
BELOW = {"base": set(), "media": set(), "guard": {"base"}, "analysis": {"base"},
         "text": {"base", "guard"}, "storage": {"base", "media", "guard", "analysis", "text"}}
BELOW["index"] = BELOW["intake"] = BELOW["storage"] | {"storage"}
BELOW["insight"] = BELOW["index"] | {"index"}
BELOW["reporting"] = BELOW["insight"] | {"insight"}
BELOW["admin"] = set(BELOW) - {"admin"}


def room_breaches(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, d) for m, deps in graph.items() for d in deps
                  if len(p := m.split(".")) > 2 and p[0] == "core"
                  and len(q := d.split(".")) > 1 and q[0] == "core" and q[1] != p[1]
                  and q[1] not in BELOW[p[1]])


def test_core_is_rooms_each_importing_only_the_rooms_below_it():
    graph = imports()
    flat = sorted(p.name for p in (ROOT / "core").glob("*.py") if p.name != "__init__.py")
    assert flat == [], "every core module lives in a room"
    rooms = {m.split(".")[1] for m in graph if top(m) == "core" and m != "core"}
    assert rooms == set(BELOW)
    for room in rooms:
        assert (ROOT / "core" / room / "__init__.py").read_text().startswith('"""'), room
    assert room_breaches(graph) == []


def test_a_room_breach_of_the_from_pkg_import_module_kind_is_seen():
    planted = {"core.storage.sessions": module_deps(
        ast.parse("def f():\n    from core.index import segment_index\n"),
        {"core.index.segment_index"})}
    assert room_breaches(planted) == [("core.storage.sessions", "core.index"),
                                      ("core.storage.sessions", "core.index.segment_index")]


def test_no_core_module_is_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "core").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}


def test_the_default_commit_hooks_exist_and_register_under_their_names():
    from core.storage import commit_hooks
    assert set(commit_hooks.hooks()) >= {"vectors", "words"}
    assert all((ROOT / (m.replace(".", "/") + ".py")).exists() for m in commit_hooks.DEFAULTS)


def test_only_the_store_imports_duckdb():
    users = sorted(m for m, deps in imports().items() if "duckdb" in map(top, deps))
    assert users == ["core.storage.store"]


def test_dashboard_is_imported_only_by_the_cli_and_imports_no_api():
    graph = imports()
    up = sorted((m, d) for m, deps in graph.items() for d in deps
                if top(d) == "dashboard" and top(m) not in ("dashboard", "cli"))
    assert up == []
    assert not [(m, d) for m, deps in graph.items() for d in deps
                if top(m) == "dashboard" and top(d) in ("api", "cli")]
    assert not [(m, d) for m, deps in graph.items() for d in deps
                if top(m) in ("ingest", "api") and top(d) == "cli"]


def loops_in(graph: dict[str, set[str]]) -> list[list[str]]:
    def resolve(d: str) -> str | None:
        while d and d not in graph:
            d = d.rpartition(".")[0]
        return d or None

    edges = {m: {r for d in deps if (r := resolve(d)) and r != m} for m, deps in graph.items()}
    state: dict[str, int] = {}
    loops = []

    def visit(u: str, stack: list[str]) -> None:
        state[u] = 1
        for v in edges[u]:
            if state.get(v) == 1:
                loops.append(stack[stack.index(v):] + [u, v])
            elif v not in state:
                visit(v, stack + [u])
        state[u] = 2

    for m in edges:
        if m not in state:
            visit(m, [])
    return loops


def test_no_import_loops():
    assert loops_in(imports()) == []


def test_a_loop_through_from_package_import_module_is_seen():
    # The shape the dashboard's components once had: a package whose modules import each
    # other by `from pkg import module` (lazily, inside a function, counts too).
    src = {"pkg": "", "pkg.a": "from pkg import b\n",
           "pkg.b": "def f():\n    from pkg import a\n", "pkg.c": "from pkg import a\n"}
    graph = {m: module_deps(ast.parse(s), set(src)) for m, s in src.items()}
    assert loops_in(graph) and {"pkg.a", "pkg.b"} <= set(loops_in(graph)[0])
    del src["pkg.b"]
    graph = {m: module_deps(ast.parse(s), set(src)) for m, s in src.items()}
    assert loops_in(graph) == []


def test_dashboard_runs_no_sql_of_its_own():
    found = [str(p.relative_to(ROOT)) for p in (ROOT / "dashboard").rglob("*.py")
             if "SELECT " in p.read_text() or ".query(" in p.read_text()]
    assert found == []


def test_the_prepare_stage_never_imports_torch():
    """ingest/prepare runs in prepare processes that must stay light: nothing it imports,
    directly or through our own modules, pulls in torch, FunASR or Streamlit."""
    graph = imports()

    def resolve(d: str) -> str | None:
        while d and d not in graph:
            d = d.rpartition(".")[0]
        return d or None

    seen, todo, heavy = set(), ["ingest.prepare"], set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for d in graph[m]:
            if top(d) in ("torch", "funasr", "streamlit", "silero_vad"):
                heavy.add((m, d))
            elif (r := resolve(d)) is not None:
                todo.append(r)
    assert "ingest.vad" in seen and heavy == set()


def test_paths_beside_the_store_are_named_only_in_core_places():
    """`<db>.wal`, `.gate`, `.ann`, `.words`, `.shards`, `.worker.lock` and the data directory's folders are
    worked out by core/base/places.py alone; erasure's OWNED folders are its own."""
    import re

    from core.admin import erasure
    from core.base import places
    beside = re.compile(r"""["'](\.wal|\.gate|\.ann|\.words|\.shards|\.worker\.lock|\.dashboard)"""
                        r"""["']|\}\.(ann|words)["'/]|resolve\(\)\.parent / ["']"""
                        r"""|/ ["'](inbox|archive|failed|exports|audit|notes|corrections|erasures"""
                        r"""|head_requests|access)["']""")
    found = [f"{p.relative_to(ROOT)}:{i}" for top in OURS for p in (ROOT / top).rglob("*.py")
             if p != ROOT / "core" / "base" / "places.py"
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if beside.search(line) and "__file__" not in line]
    assert not found, found
    assert erasure.OWNED is places.OWNED and set(places.OWNED) <= set(places.FOLDERS)


def test_emoscope_toml_is_read_in_one_place(tmp_path, monkeypatch):
    """core/base/config_file is the one TOML reader of ours (dashboard/launch reads Streamlit's
    secrets.toml, not emoscope.toml); the rules and the settings find the same file."""
    readers = sorted(str(p.relative_to(ROOT)) for t in OURS for p in (ROOT / t).rglob("*.py")
                     if "tomllib" in p.read_text())
    assert readers == ["core/base/config_file.py", "dashboard/launch.py"]
    from core.analysis.rules import load_rules
    from core.base.config_file import config_path
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text("[trend]\nthreshold = 0.42\n")
    monkeypatch.delenv("EMOSCOPE_RULES", raising=False)
    monkeypatch.setenv("EMOSCOPE_CONFIG", str(cfg))
    assert config_path() == cfg.resolve() and load_rules().trend_threshold == 0.42
