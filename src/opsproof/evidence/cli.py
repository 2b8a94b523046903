"""`opsproof evidence verify|prune|report|keygen` -- mounted by the main CLI as `opsproof evidence`.

verify: exit 0 when every hash, signature and the chain hold; 1 printing the first problem as one line;
2 for a path that does not exist or a key that cannot be read. With a trusted key (`--pubkey PATH`, or
the OPSPROOF_SIGNING_KEY setting) a missing or foreign signature is a problem; without one, unsigned
packs are reported as "unsigned".
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import List, Optional

import typer

from opsproof import clock
from opsproof.cliutil import one_line_errors
from opsproof.errors import UsageError
from opsproof.evidence.common import MANIFEST, TAR_SUFFIXES, is_tar_pack, pack_day
from opsproof.evidence.retention import prune as _prune
from opsproof.evidence.verify import verify_chain, verify_pack
from opsproof.paths import project_dir

app = typer.Typer(help="The daily evidence pack: verify, prune, report.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

DEFAULT_ROOT = Path("reports/evidence")


def _root(root: Optional[Path]) -> Path:
    return root if root is not None else project_dir() / DEFAULT_ROOT


def _date(text: Optional[str], option: str) -> date:
    if not text:
        return clock.today()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"bad {option} {text!r}: use YYYY-MM-DD") from None


def _looks_like_pack(path: Path) -> bool:
    return path.is_file() or is_tar_pack(path) or (path / MANIFEST).exists() or pack_day(path) is not None


@app.command()
@one_line_errors
def verify(
    target: Optional[Path] = typer.Argument(None, metavar="[DIR]",
                                            help="A pack (YYYY-MM-DD dir or .tar.gz) or an evidence root."),
    days: int = typer.Option(35, "--days", min=1, help="Chain window when verifying a root."),
    root: Optional[Path] = typer.Option(None, "--root", help="Evidence root [default: <project>/reports/evidence]."),
    today: Optional[str] = typer.Option(None, "--today", help="Window end (YYYY-MM-DD) [default: today UTC]."),
    require_today: bool = typer.Option(False, "--require-today", help="Fail when today's pack is missing."),
    show_all: bool = typer.Option(False, "--all", help="Print every problem, not just the first."),
    pubkey: Optional[List[Path]] = typer.Option(
        None, "--pubkey", help="Trusted ed25519 public (or private) key PEM; repeat for rotated keys "
                               "[default: the OPSPROOF_SIGNING_KEY setting]."),
) -> None:
    """Verify a pack, or every pack of the last --days days, their signatures and the hash chain between them."""
    from opsproof.evidence.signing import fingerprint, trusted_keys

    trusted = trusted_keys(list(pubkey or []), _settings())
    path = target if target is not None else _root(root)
    if not path.exists() and pack_day(path) is not None:  # 2026-11-20 after retention compressed it
        path = next((path.with_name(path.name + s) for s in TAR_SUFFIXES
                     if path.with_name(path.name + s).exists()), path)
    if not path.exists():
        raise UsageError(f"no such evidence path: {path}")
    if target is not None and _looks_like_pack(path):
        result = verify_pack(path, trusted)
    else:
        result = verify_chain(path, days=days, today=_date(today, "--today"), require_today=require_today,
                              trusted=trusted)
    if not result.ok:
        for line in (result.problems if show_all else result.problems[:1]):
            typer.echo(line, err=True)
        raise typer.Exit(1)
    n = len(result.packs)
    typer.echo(f"ok: {n} pack{'s' if n != 1 else ''} verified ({result.packs[0]} .. {result.packs[-1]})"
               if n > 1 else f"ok: {result.packs[0]} verified")
    if trusted:
        keys = ", ".join(fingerprint(k)[:16] for k in trusted)
        typer.echo(f"signatures: every pack signed by a trusted key ({keys})")
    else:
        signed = sorted({s for s in result.signatures.values() if s != "unsigned"})
        if signed:
            typer.echo(f"signatures: self-consistent, key(s) {', '.join(s[:16] for s in signed)} NOT checked "
                       "against a trusted key (give --pubkey or set OPSPROOF_SIGNING_KEY)")
        for line in (result.notes if show_all else result.notes[:1]):
            typer.echo(line)


def _settings():
    """The resolved settings for the OPSPROOF_SIGNING_KEY setting; verify needs no target, so a settings
    problem elsewhere does not stop it (the environment is read directly then)."""
    try:
        from opsproof.config import load_settings

        return load_settings()
    except Exception:
        return None


@app.command()
@one_line_errors
def keygen(
    path: Path = typer.Argument(..., help="Where to write the ed25519 private key (PEM, mode 0600). Keep it "
                                          "outside the evidence tree."),
) -> None:
    """Create an evidence signing key; point OPSPROOF_SIGNING_KEY at it. Refuses to replace a key."""
    from opsproof.evidence.signing import generate, public_pem

    resolved = path.expanduser().resolve()
    evidence_root = (project_dir() / DEFAULT_ROOT).resolve()
    if resolved == evidence_root or evidence_root in resolved.parents:
        raise UsageError(f"{path} is inside the evidence tree: keep the signing key outside it")
    signer = generate(resolved)
    pub = resolved.with_name(resolved.stem + ".pub.pem")
    if not pub.exists():
        pub.write_bytes(public_pem(signer.public))
    typer.echo(f"signing key {resolved} (mode 0600), public key {pub} (give auditors this: --pubkey); "
               f"key sha256 {signer.key_sha256[:16]}; set OPSPROOF_SIGNING_KEY={resolved}")


@app.command()
@one_line_errors
def prune(
    root: Optional[Path] = typer.Option(None, "--root", help="Evidence root [default: <project>/reports/evidence]."),
    today: Optional[str] = typer.Option(None, "--today", help="YYYY-MM-DD [default: today UTC]."),
    keep_days: Optional[int] = typer.Option(None, "--keep-days", min=0,
                                            help="Purge packs older than this [default: policy, 35]."),
    compress_after: Optional[int] = typer.Option(None, "--compress-after", min=0,
                                                 help="Compress packs older than this [default: policy, 7]."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Policy file for the defaults [default: opsproof.toml]."),
) -> None:
    """Purge packs past retention and compress older packs (tar.gz); verify still works on them."""
    if keep_days is None or compress_after is None:
        keep_default, compress_default = _policy_retention(policy)
        keep_days = keep_default if keep_days is None else keep_days
        compress_after = compress_default if compress_after is None else compress_after
    path = _root(root)
    if root is not None and not path.exists():
        raise UsageError(f"no such evidence root: {path}")
    report = _prune(path, _date(today, "--today"), keep_days=keep_days, compress_after_days=compress_after)
    typer.echo(f"pruned {path}: {len(report['purged'])} purged, {len(report['compressed'])} compressed, "
               f"{len(report['kept'])} kept" + (f", {len(report['cleaned'])} leftovers cleaned" if report["cleaned"] else ""))


def _policy_retention(policy: Optional[Path]) -> tuple[int, int]:
    """(retention_days, compress_after_days) from the policy file; built-in defaults when there is none."""
    path = policy if policy is not None else project_dir() / "opsproof.toml"
    if policy is None and not path.exists():
        return 35, 7
    from opsproof.policy import load  # a malformed policy is a UsageError: one line, exit 2

    loaded = load(path)
    return loaded.evidence.retention_days, loaded.evidence.compress_after_days


@app.command()
@one_line_errors
def report(
    pack: Path = typer.Argument(..., help="A pack dir holding allure-results/."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Output dir [default: <project>/reports/allure-report/<pack name>]."),
    single_file: bool = typer.Option(False, "--single-file", help="One self-contained index.html (allure awesome)."),
) -> None:
    """(Re)generate the Allure HTML of a committed pack's allure-results.

    The output goes outside the pack: a committed pack is sealed, and a new file in it would fail verify.
    (The daily run makes <pack>/allure-report in staging, before commit.)"""
    from opsproof.evidence.allure import generate

    if not pack.is_dir():
        raise UsageError(f"no such pack dir: {pack}")
    target = out if out is not None else project_dir() / "reports" / "allure-report" / pack.name
    if target.resolve().is_relative_to(pack.resolve()):
        raise UsageError(f"--out {target} is inside the sealed pack {pack}; choose a dir outside it")
    result = generate(pack / "allure-results", target, single_file=single_file)
    if not result:
        typer.echo(f"allure report not generated: {result.reason}", err=True)
        raise typer.Exit(1)
    typer.echo(f"allure report: {result.out_dir}/index.html")
