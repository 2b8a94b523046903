"""The doors hold (docs/architecture.md): measure/ alone reads, levers/ alone writes (one audit helper, one
connection factory), and the verdict makers (checks/ drills/ acceptance/) carry no SQL of their own.

Pure ast over the source tree: no stack, no imports of the modules checked.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "opsproof"

# TEMPORARY allowances (the lead removes each entry once its owner has finished):
# - levers/ files that may still open their own connections or write ops.audit themselves: none left.
LEVERS_OWN_WRITES_ALLOWED: set[Path] = set()
VERDICT_MAKERS = ("checks", "drills", "acceptance")

SQL_RE = re.compile(r"^\s*\(?\s*(select|insert\s+into|update|delete\s+from|with\s+\w+\s+as)\s", re.I)
AUDIT_CALL_RE = re.compile(r"\b(select|perform|from)\s+ops\.audit\s*\(", re.I)  # a call, not a signature or prose


def _py(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _module_of(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (top level or inside functions), relative imports resolved."""
    out: set[str] = set()
    package = _module_of(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_of(path)
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _violations(folder: str, forbidden: tuple[str, ...], allowed: set[Path] = frozenset()) -> list[str]:
    bad = []
    for path in _py(SRC / folder):
        if path in allowed:
            continue
        for mod in sorted(imports_of(path)):
            if any(mod == f or mod.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    return bad


def test_measure_imports_no_levers_plane_or_evidence():
    assert _violations("measure", ("opsproof.levers", "opsproof.plane", "opsproof.evidence")) == []


def test_levers_import_nothing_from_the_plane():
    """Levers reach the target's services over their interfaces (SQL, HTTP), never through the reference plane."""
    assert _violations("levers", ("opsproof.plane",)) == []


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def sql_literals(path: Path) -> list[tuple[int, str]]:
    """String literals (f-strings included, docstrings excluded) that read or write with SQL."""
    tree = _tree(path)
    skip = _docstrings(tree)
    out = []
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        if text and SQL_RE.search(text):
            out.append((node.lineno, text.strip().splitlines()[0][:80]))
    return sorted(set(out))


@pytest.mark.parametrize("folder", VERDICT_MAKERS)
def test_verdict_makers_carry_no_sql(folder):
    bad = []
    for path in _py(ROOT / folder):
        found = sql_literals(path)
        if found:
            bad.append(f"{path.relative_to(ROOT)}: {len(found)} SQL literal(s): {found[:5]}")
    assert bad == [], "reads belong in src/opsproof/measure (a function returning a Measurement):\n" + "\n".join(bad)


def test_only_levers_common_writes_the_audit_row_and_opens_connections():
    bad = []
    for path in _py(SRC / "levers"):
        if path.name == "common.py" or path in LEVERS_OWN_WRITES_ALLOWED:
            continue
        tree = _tree(path)
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
                    and AUDIT_CALL_RE.search(node.value)):
                bad.append(f"{path.name}:{node.lineno}: calls ops.audit( itself (use levers.common.audit)")
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                owner = fn.value.id if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) else ""
                if owner == "psycopg" and name == "connect":
                    bad.append(f"{path.name}:{node.lineno}: psycopg.connect (use levers.common.connect/connection)")
                if name == "audit" and not (isinstance(fn, ast.Name) or owner == "common"):
                    continue
                if name == "audit" and node.args[1:]:
                    bad.append(f"{path.name}:{node.lineno}: audit(...) with positional fields (keywords only)")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in ("audit", "_audit"):
                bad.append(f"{path.name}:{node.lineno}: defines its own {node.name}()")
    assert bad == []


def test_the_audit_helper_takes_keywords_only():
    import inspect

    from opsproof.levers.common import audit

    params = list(inspect.signature(audit).parameters.values())
    assert params[0].name == "conn"
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])


def test_the_detector_sees_sql():
    """The SQL detector itself: a literal read, a write, an f-string; not prose."""
    assert SQL_RE.search("select 1") and SQL_RE.search("  insert into ops.x values (1)")
    assert SQL_RE.search("update ops.budgets set value = 1") and SQL_RE.search("(select count(*) from t)")
    assert not SQL_RE.search("the update came late") and not SQL_RE.search("insert a row")
    assert AUDIT_CALL_RE.search("select ops.audit(%s, %s)") and AUDIT_CALL_RE.search("select * from ops.audit('a')")
    assert not AUDIT_CALL_RE.search("to_regprocedure('ops.audit(text,text)')") and not AUDIT_CALL_RE.search("ops.audit(...)")


@pytest.mark.parametrize("folder", VERDICT_MAKERS)
def test_verdict_makers_read_only_through_measure(folder):
    """A check, drill or acceptance step never runs a statement itself (target.rows/value/execute/connection):
    it calls a measure/ function (reads) or a lever (writes)."""
    bad = []
    for path in _py(ROOT / folder):
        for node in ast.walk(_tree(path)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("rows", "value", "execute", "connection", "measure")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("target", "conn", "cur")):
                bad.append(f"{path.name}:{node.lineno}: {node.func.value.id}.{node.func.attr}(...)")
    assert bad == []
