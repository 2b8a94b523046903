"""`opsproof catalog list | show | readme` (mounted by the top-level CLI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from opsproof.errors import OpsproofError

app = typer.Typer(help="The control catalog (controls.toml): list and select controls, show one, regenerate "
                       "the README's controls table.", no_args_is_help=True, pretty_exceptions_enable=False)

_CATALOG = typer.Option(None, "--catalog", help="controls.toml (default: <project>/controls.toml)")
_POLICY = typer.Option(None, "--policy", help="opsproof.toml whose values the thresholds show "
                                              "(default: <project>/opsproof.toml)")


def _fail(exc: OpsproofError) -> typer.Exit:
    typer.echo(f"opsproof: {exc}", err=True)
    return typer.Exit(exc.exit_code)


def _policy(path: Optional[Path]):
    from opsproof import paths, policy

    if path is not None:
        return policy.load(path)
    default = paths.project_dir() / "opsproof.toml"
    return policy.load(default) if default.is_file() else policy.Policy()


def _control_doc(c, pol) -> dict:
    from opsproof.catalog import policy_value

    doc = c.model_dump(mode="json", exclude={"also"})
    doc["frameworks"] = c.frameworks.as_dict()
    doc["thresholds"] = []
    for t in c.thresholds:
        try:
            value = policy_value(pol, t.policy_key)
        except KeyError:
            value = None
        doc["thresholds"].append({"policy_key": t.policy_key, "operator": t.operator, "value": value})
    return doc


@app.command("list")
def list_(severity: Optional[List[str]] = typer.Option(None, "--severity", help="critical|high|medium|low "
                                                       "(repeatable)"),
          requirement: Optional[List[str]] = typer.Option(None, "--requirement",
                                                          help="e.g. SOC2:CC6.1 or ISO27001:A.8.16 (repeatable)"),
          suite: Optional[List[str]] = typer.Option(None, "--suite", help="daily|gate|weekly|monthly|drill|"
                                                    "acceptance (repeatable)"),
          as_json: bool = typer.Option(False, "--json", help="print the controls as JSON"),
          catalog_path: Optional[Path] = _CATALOG, policy_path: Optional[Path] = _POLICY) -> None:
    """The controls matching every filter given (any value within one filter)."""
    from opsproof import catalog
    from opsproof.catalog_readme import _sort_key

    try:
        cat = catalog.load(catalog_path)
        ids = sorted(cat.select(severities=severity, requirements=requirement, suites=suite), key=_sort_key)
        pol = _policy(policy_path) if as_json else None
    except OpsproofError as exc:
        raise _fail(exc)
    if as_json:
        typer.echo(json.dumps([_control_doc(cat.get(i), pol) for i in ids], indent=2, default=str))
        return
    for i in ids:
        c = cat.get(i)
        typer.echo(f"{i}  {c.severity:<8}  {','.join(c.suites):<20}  {c.title}")
    typer.echo(f"{len(ids)} of {len(cat.ids)} controls")


@app.command("show")
def show(control_id: str = typer.Argument(..., help="a control id, e.g. SLO-003"),
         as_json: bool = typer.Option(False, "--json"),
         catalog_path: Optional[Path] = _CATALOG, policy_path: Optional[Path] = _POLICY) -> None:
    """Everything the catalog says about one control, its thresholds with their policy values."""
    from opsproof import catalog
    from opsproof.catalog_readme import format_value

    try:
        cat = catalog.load(catalog_path)
        doc = _control_doc(cat.get(control_id.strip().upper()), _policy(policy_path))
    except OpsproofError as exc:
        raise _fail(exc)
    if as_json:
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    typer.echo(f"{doc['id']}: {doc['title']}")
    typer.echo(f"  area {doc['area']}, severity {doc['severity']}, kind {doc['kind']}, suites "
               f"{', '.join(doc['suites'])}")
    for fw, reqs in doc["frameworks"].items():
        typer.echo(f"  {fw}: {', '.join(reqs) or '-'}")
    for t in doc["thresholds"]:
        typer.echo(f"  threshold: measured {t['operator']} {format_value(t['value'])}  ({t['policy_key']})")
    typer.echo(f"  rationale: {doc['rationale']}")
    typer.echo(f"  remediation: {doc['remediation']}")
    for p in doc["proof"]:
        typer.echo(f"  proof: {p}")


@app.command("readme")
def readme(check: bool = typer.Option(False, "--check", help="exit 1 when the README's table is stale; "
                                                             "change nothing"),
           readme_path: Optional[Path] = typer.Option(None, "--readme", help="default: <project>/README.md"),
           catalog_path: Optional[Path] = _CATALOG, policy_path: Optional[Path] = _POLICY) -> None:
    """Regenerate the README's controls table (between <!-- controls:begin --> and <!-- controls:end -->)."""
    from opsproof import catalog, paths
    from opsproof.catalog_readme import current_table, rewrite

    path = readme_path or paths.project_dir() / "README.md"
    try:
        table = catalog.load(catalog_path).readme_table(_policy(policy_path))
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise OpsproofError(f"README not found: {path}", exit_code=2) from None
        stale = current_table(text, path) != table
    except OpsproofError as exc:
        raise _fail(exc)
    if check:
        if stale:
            typer.echo(f"opsproof: {path}: the controls table is stale; run `opsproof catalog readme`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{path}: the controls table is current")
        return
    if stale:
        path.write_text(rewrite(text, table, path))
        typer.echo(f"{path}: controls table rewritten")
    else:
        typer.echo(f"{path}: the controls table is current")
