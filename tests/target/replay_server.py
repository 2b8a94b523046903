"""A local server that replays the recorded Supabase platform answers (tests/target/recorded/), for end-to-end runs of
the suite through the CLI with SUPABASE_URL / SUPABASE_API_URL pointing at it (loopback, a free port, a thread).

What it serves, each in the recorded (documented) shape:

- Management API: GET /v1/projects/{ref}/database/backups (mgmt_backups_pitr: PITR's latest point rebased to the
  replay's clock, rounded up to the second: PITR archives continuously), /analytics/endpoints/logs.all (mgmt_logs_edge_slo; the SQL sent is kept),
  /advisors/security (mgmt_advisors_security's shape: an `rls_disabled_in_public` ERROR for every table in public
  without RLS in the test DB -- splinter's own rule run against the DB, so the advisor canary is really found --
  plus the recording's WARN lint);
- Metrics API: GET /customer/v1/privileged/metrics (metrics_api.prom; HTTP Basic service_role required);
- Auth: POST /auth/v1/admin/users, POST /auth/v1/token?grant_type=password, DELETE /auth/v1/admin/users/{id}
  (auth_* recordings; the access token is a JWT carrying the user's app_metadata);
- PostgREST: HEAD /rest/v1/{relation}?{col}=eq.{value} with Prefer: count=exact, answered the way PostgREST does:
  in the test DB, as `anon` or `authenticated` with request.jwt.claims set from the bearer token (RLS applies).

Every request is logged in `ReplayServer.calls` (method, path) so tests can assert which sources were used.
"""

from __future__ import annotations

import base64
import json
import math
import re
import socket
import threading
import time
import uuid
from pathlib import Path

import jwt
import psycopg
import uvicorn
from psycopg import sql as q
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

RECORDED = Path(__file__).parent / "recorded"
REPLAY_SECRET = "replay-server-signing-secret-not-a-real-key-0123456789"
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

RLS_DISABLED_SQL = """
select n.nspname as schema, c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity and not c.relispartition
   and (has_table_privilege('anon', c.oid, 'SELECT') or has_table_privilege('authenticated', c.oid, 'SELECT'))
"""


def _body(name: str) -> dict:
    return json.loads((RECORDED / f"{name}.json").read_text())["body"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReplayServer:
    def __init__(self, dsn: str, service_key: str, access_token: str):
        self.dsn, self.service_key, self.access_token = dsn, service_key, access_token
        self.calls: list[tuple[str, str]] = []
        self.logs_sql: list[str] = []
        self.users: dict[str, dict] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- the app ---------------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        routes = [
            Route("/v1/projects/{ref}/database/backups", self.backups),
            Route("/v1/projects/{ref}/analytics/endpoints/logs.all", self.logs),
            Route("/v1/projects/{ref}/advisors/security", self.advisors),
            Route("/customer/v1/privileged/metrics", self.metrics),
            Route("/auth/v1/admin/users", self.create_user, methods=["POST"]),
            Route("/auth/v1/admin/users/{uid}", self.delete_user, methods=["DELETE"]),
            Route("/auth/v1/token", self.token, methods=["POST"]),
            Route("/rest/v1/{rel}", self.rest_count, methods=["HEAD", "GET"]),
        ]
        calls = self.calls

        class Log:  # a pure ASGI middleware: record (method, path) of every request
            def __init__(self, app):
                self.app = app

            async def __call__(self, scope, receive, send):
                if scope["type"] == "http":
                    calls.append((scope["method"], scope["path"]))
                await self.app(scope, receive, send)

        return Starlette(routes=routes, middleware=[Middleware(Log)])

    def _mgmt_ok(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.access_token}"

    def _service_ok(self, request: Request) -> bool:
        return request.headers.get("apikey") == self.service_key

    async def backups(self, request: Request) -> Response:
        if not self._mgmt_ok(request):
            return JSONResponse({"message": "Unauthorized"}, 401)
        body = _body("mgmt_backups_pitr")
        body["physical_backup_data"]["latest_physical_backup_date_unix"] = math.ceil(time.time())
        return JSONResponse(body)

    async def logs(self, request: Request) -> Response:
        if not self._mgmt_ok(request):
            return JSONResponse({"message": "Unauthorized"}, 401)
        sql = request.query_params.get("sql", "")
        if not (request.query_params.get("iso_timestamp_start") and request.query_params.get("iso_timestamp_end")):
            return JSONResponse({"result": [], "error": "iso_timestamp_start and iso_timestamp_end are required"})
        self.logs_sql.append(sql)
        body = _body("mgmt_logs_edge_slo")
        row = dict(body["result"][0])
        # answer the burn-rate columns the SQL asked for (requests_<N>h / errors_<N>h)
        for label in re.findall(r"as requests_(\d+h)\b", sql):
            row.setdefault(f"requests_{label}", row["requests_1h"])
            row.setdefault(f"errors_{label}", row["errors_1h"])
        return JSONResponse({"result": [row], "error": None})

    async def advisors(self, request: Request) -> Response:
        if not self._mgmt_ok(request):
            return JSONResponse({"message": "Unauthorized"}, 401)
        recorded = _body("mgmt_advisors_security")["lints"]
        template = next(x for x in recorded if x["name"] == "rls_disabled_in_public")
        lints = [x for x in recorded if x["level"] != "ERROR"]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for schema, name in conn.execute(RLS_DISABLED_SQL).fetchall():
                lints.append({**template, "detail": f"Table `{schema}.{name}` is public, but RLS has not been enabled.",
                              "metadata": {"name": name, "type": "table", "schema": schema},
                              "cache_key": f"rls_disabled_in_public_{schema}_{name}"})
        return JSONResponse({"lints": lints})

    async def metrics(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        want = "Basic " + base64.b64encode(f"service_role:{self.service_key}".encode()).decode()
        if auth != want:
            return PlainTextResponse("Unauthorized", 401)
        text = "\n".join(ln for ln in (RECORDED / "metrics_api.prom").read_text().splitlines()
                         if not ln.startswith("# Recorded") and not ln.startswith("# series"))
        return PlainTextResponse(text + "\n", media_type="text/plain; version=0.0.4")

    async def create_user(self, request: Request) -> Response:
        if not self._service_ok(request):
            return JSONResponse({"code": 401, "msg": "invalid apikey"}, 401)
        data = await request.json()
        body = _body("auth_admin_create_user")
        uid = str(uuid.uuid4())
        body.update(id=uid, email=data["email"],
                    app_metadata={"provider": "email", "providers": ["email"], **data.get("app_metadata", {})})
        self.users[uid] = {**body, "password": data["password"]}
        return JSONResponse(body)

    async def delete_user(self, request: Request) -> Response:
        if not self._service_ok(request):
            return JSONResponse({"code": 401, "msg": "invalid apikey"}, 401)
        self.users.pop(request.path_params["uid"], None)
        return JSONResponse({})

    async def token(self, request: Request) -> Response:
        data = await request.json()
        user = next((u for u in self.users.values() if u["email"] == data.get("email")
                     and u["password"] == data.get("password")), None)
        if user is None:
            return JSONResponse({"code": 400, "error_code": "invalid_credentials",
                                 "msg": "Invalid login credentials"}, 400)
        now = int(time.time())
        claims = {"sub": user["id"], "aud": "authenticated", "role": "authenticated", "email": user["email"],
                  "app_metadata": user["app_metadata"], "user_metadata": {}, "iat": now, "exp": now + 3600}
        body = _body("auth_token_password")
        body.update(access_token=jwt.encode(claims, REPLAY_SECRET, algorithm="HS256"), expires_at=now + 3600,
                    user={k: v for k, v in user.items() if k != "password"})
        return JSONResponse(body)

    async def rest_count(self, request: Request) -> Response:
        rel = request.path_params["rel"]
        schema = request.headers.get("accept-profile", "public")
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        claims: dict = {"role": "anon"}
        if bearer and bearer != request.headers.get("apikey"):
            try:
                claims = jwt.decode(bearer, REPLAY_SECRET, algorithms=["HS256"], audience="authenticated")
            except jwt.PyJWTError:
                return JSONResponse({"code": "PGRST301", "message": "JWT invalid"}, 401)
        filters = [(k, v.removeprefix("eq.")) for k, v in request.query_params.items()
                   if k not in ("select", "limit", "offset", "order") and v.startswith("eq.")]
        if not IDENT.match(rel) or not IDENT.match(schema) or any(not IDENT.match(k) for k, _ in filters):
            return JSONResponse({"code": "PGRST100", "message": "bad request"}, 400)
        where = q.SQL(" and ").join(q.SQL("{}::text = {}").format(q.Identifier(k), q.Literal(v)) for k, v in filters) \
            if filters else q.SQL("true")
        stmt = q.SQL("select count(*) from {}.{} where {}").format(q.Identifier(schema), q.Identifier(rel), where)
        try:
            with psycopg.connect(self.dsn) as conn, conn.transaction():
                conn.execute(q.SQL("set local role {}").format(q.Identifier(claims.get("role", "anon"))))
                conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
                n = conn.execute(stmt).fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return JSONResponse({"code": "PGRST205", "message": f"Could not find the table '{schema}.{rel}'"}, 404)
        except psycopg.errors.InsufficientPrivilege:
            return JSONResponse({"code": "42501", "message": "permission denied"}, 401 if claims["role"] == "anon" else 403)
        rng = "0-0/" + str(n) if n else "*/0"
        return Response(status_code=200, headers={"content-range": rng, "content-profile": schema,
                                                  "content-type": "application/json; charset=utf-8"})

    # -- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> ReplayServer:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the replay server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
