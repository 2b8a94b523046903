"""The opsproof pytest plugin (entry point `pytest11: opsproof`): markers, options, and -- for suite runs only --
the SuiteRun plugin object (suite_state.py) and the pack (suite_pack.py).

A run is a *suite run* when it collects from checks/, drills/ or acceptance/ (e.g. `pytest -m daily`); only
suite runs connect to a target and write an evidence pack. Other pytest runs of the venv (the project's own
tests/, another project's) see the markers and prefixed options and nothing else. State lives in
`config.stash[STATE_KEY]`, never in a module global.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opsproof import clock, suite_options
from opsproof.errors import OpsproofError
from opsproof.suite_state import STATE_KEY, SuiteRun, SuiteState, control_of, is_worker, state_of

# the suite's fixtures ship inside the package: `pip install opsproof` and a suite in another repository works
pytest_plugins = ["opsproof.fixtures.target", "opsproof.fixtures.levers"]

__all__ = ["STATE_KEY", "SuiteState", "control_of", "state_of"]

MARKERS = {
    "daily": "daily guardrail/SLO/security controls (cron)",
    "gate": "the CI deploy gate subset (flags, budgets, SLO gates)",
    "weekly": "weekly reviews and scans (run with a 7-day window)",
    "monthly": "monthly reviews (run with a 30-day window)",
    "drill": "weekly resilience drills (change the live system on purpose, restore it)",
    "acceptance": "done-done acceptance steps",
    "flags": "area: guardrail feature flags",
    "budgets": "area: budgets",
    "slo": "area: SLO gates",
    "watchlist": "area: watchlist",
    "security": "area: security",
    "cadence": "area: operational cadence",
    "telemetry": "area: telemetry freshness (the streams the other controls read keep arriving)",
    "code": "area: the TMS's code (static analysis and secrets scanning)",
    "control(id)": "the catalog id of the control a check proves (controls.toml holds its metadata)",
}


def pytest_addoption(parser):
    suite_options.add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")
    if not suite_options.is_suite_run(config):
        return
    from opsproof import policy as policy_mod
    from opsproof.config import resolve_settings

    try:
        opts = suite_options.resolve(config)
        pol = policy_mod.load(opts.policy)
        catalog = _load_catalog(opts.catalog)
        waivers = _load_waivers(opts.waivers, catalog)
        if opts.selected:  # unknown ids, severities or requirements: exit 2 before anything runs
            catalog.select(ids=list(opts.controls) or None, severities=list(opts.severities) or None,
                           requirements=list(opts.requirements) or None)
        window = clock.parse_window(opts.window)
        day = clock.parse_date(opts.date)
        settings = resolve_settings(opts.target)  # environment > .env > embedded stack files
    except OpsproofError as exc:
        pytest.exit(f"opsproof: {exc}", returncode=exc.exit_code)
    state = SuiteState(config=config, options=opts, policy=pol, catalog=catalog, waivers=waivers,
                       settings=settings, window=window, day=day)
    config.stash[STATE_KEY] = state
    config.pluginmanager.register(SuiteRun(state), "opsproof-suite-run")
    from opsproof.evidence.reports import ReportsPlugin

    config.pluginmanager.register(ReportsPlugin(state), "opsproof-reports")  # html/allure/junit (workers too)
    os.environ["OPSPROOF_RUN_ID"] = state.run_id  # xdist workers (spawned later) share the controller's run id
    if is_worker(config):
        return
    if not (opts.no_evidence or opts.dry_run):  # a dry run changes and proves nothing
        from opsproof import suite_pack

        suite_pack.open_pack(state)
    _stop_on_signals(state)


def _load_catalog(path: Path):
    from opsproof import catalog as catalog_mod

    return catalog_mod.load(path)


def _load_waivers(path: Path | None, catalog):
    if path is None:
        return None
    from opsproof import waivers as waivers_mod

    return waivers_mod.load(path, catalog)


def _stop_on_signals(st: SuiteState) -> None:
    """SIGINT/SIGTERM stop a suite run whatever the inherited disposition (cron, nohup and `&` jobs start
    with SIGINT ignored; SIGTERM would end the process without a pack): each becomes a KeyboardInterrupt,
    so pytest ends the session as interrupted and the pack says so (never green)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def on_term(signum, frame):
        from opsproof.levers.signals import Interrupted

        raise Interrupted(signum)

    try:
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
            st.saved_signals[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        st.saved_signals[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):
        pass


CONTRACT_TABLES = ("ops.feature_flags", "ops.flag_overrides", "ops.budgets", "ops.requests", "ops.health_probes",
                   "ops.outbox", "ops.agent_tasks", "ops.dlq", "ops.dlq_replays", "ops.spans", "ops.ci_events",
                   "ops.alerts", "ops.backups", "ops.service_accounts")


def pytest_sessionstart(session):
    """Suite runs: reach the target before any check runs; unreachable/wrong credentials/no contract = exit 2."""
    st = state_of(session.config)
    if st is None:
        return
    from opsproof.target.db import Target

    if st.settings.db_url is None:
        hint = ("the embedded stack is not up: run `opsproof stack up` (or `make daily`)"
                if st.settings.target == "embedded" else "SUPABASE_DB_URL is not set")
        pytest.exit(f"opsproof: no target: {hint}", returncode=2)
    try:
        st.target = Target(st.settings.db_url.get_secret_value())
    except OpsproofError as exc:
        pytest.exit(f"opsproof: {exc} [{st.settings.describe_line()}]", returncode=exc.exit_code)
    missing = [t for t in CONTRACT_TABLES if st.target.value("select to_regclass(%s) is null", (t,))]
    if missing:
        st.target.close()
        st.target = None
        pytest.exit(f"opsproof: the ops contract is missing on the target: {', '.join(missing)} "
                    "(apply supabase/migrations with `supabase db push`)", returncode=2)


# -- the pack, and closing what the run opened --------------------------------------------------------------

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    st = state_of(config)
    if st is None:
        return
    try:
        if not is_worker(config) and st.pack is not None:
            if not st.results:
                st.pack.abort()
            else:
                from opsproof import suite_pack

                suite_pack.write(st)
    finally:
        _restore_signals(st)
        if st.target is not None:  # the pool is closed at session end (workers and controller)
            st.target.close()
            st.target = None


def _restore_signals(st) -> None:
    import signal

    for sig, prev in (getattr(st, "saved_signals", None) or {}).items():
        try:
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        except (ValueError, OSError, TypeError):
            pass
