"""The compliance desk's read-only web page, served by the intake app under `/dashboard`.

Everything on it is read from the ledger (`unlearning.operations.overview`): open requests with
a countdown to their deadline, one request's timeline (received → planned → excluded →
restored, certificate digests, ledger indices, the commands that verify it), the models'
registered versions with their certificate state, the latest signed checkpoint, and a chart of
days to exact compliance. Nothing on it changes anything.

Login: one viewer token (`erasure intake dashboard-token` prints it once; only its SHA-256 is
kept, in `$ERASURE_HOME/intake/dashboard.sha256`, 0600). `GET /dashboard/login?token=...` (or a
bearer header on any page) sets an HttpOnly, SameSite=Strict cookie holding the token; the
page never embeds it. Without a token file the dashboard answers 404: it is off.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ledger import entries
from ledger.errors import BadInput, ErasureError
from ledger.log import open_ledger
from ledger.workspace import Workspace

COOKIE = "erasure_dashboard"
TOKEN_PREFIX = "erd_"


def token_file(ws: Workspace) -> Path:
    return ws.home / "intake" / "dashboard.sha256"


def new_token(ws: Workspace) -> str:
    """A new viewer token (the previous one stops working); only its SHA-256 is written."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    path = token_file(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(hashlib.sha256(token.encode()).hexdigest() + "\n")
    tmp.replace(path)
    return token


def _allowed(ws: Workspace, token: str | None) -> bool | None:
    """None: the dashboard is off (no token file); else whether `token` is the viewer token."""
    try:
        expected = token_file(ws).read_text().strip()
    except FileNotFoundError:
        return None
    given = hashlib.sha256((token or "").encode()).hexdigest()
    return bool(token) and hmac.compare_digest(expected, given)


def router(ws: Workspace) -> APIRouter:
    routes = APIRouter(prefix="/dashboard", include_in_schema=False)

    def gate(request: Request) -> Response | None:
        bearer = request.headers.get("authorization", "")
        token = bearer[7:] if bearer.lower().startswith("bearer ") else request.cookies.get(COOKIE)
        allowed = _allowed(ws, token)
        if allowed is None:
            return Response(status_code=404)
        if not allowed:
            return HTMLResponse(_page("Log in", "<p>This page needs the viewer token: open "
                                      "<code>/dashboard/login?token=…</code> (from "
                                      "<code>erasure intake dashboard-token</code>).</p>"), status_code=401)
        return None

    @routes.get("/login")
    async def login(request: Request, token: str = "") -> Response:
        allowed = _allowed(ws, token)
        if allowed is None:
            return Response(status_code=404)
        if not allowed:
            return HTMLResponse(_page("Log in", "<p>That token is not the viewer token.</p>"), status_code=401)
        answer = RedirectResponse("/dashboard", status_code=303)
        answer.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/dashboard")
        return answer

    @routes.get("")
    async def home(request: Request) -> Response:
        return gate(request) or HTMLResponse(await run_in_threadpool(render_overview, ws))

    @routes.get("/requests/{request_id}")
    async def timeline(request: Request, request_id: str) -> Response:
        refused = gate(request)
        if refused:
            return refused
        try:
            return HTMLResponse(await run_in_threadpool(render_timeline, ws, request_id))
        except BadInput as err:
            return HTMLResponse(_page("Not found", f"<p>{_e(err)}</p>"), status_code=404)

    return routes


# --- pages --------------------------------------------------------------------------------------

def render_overview(ws: Workspace, now: datetime | None = None) -> str:
    from unlearning.operations.overview import overview

    now = now or datetime.now(UTC)
    view = overview(ws, now)
    rows = "".join(
        f"<tr><td><a href='/dashboard/requests/{_e(r['request_id'])}'>{_e(r['request_id'])}</a></td>"
        f"<td>{_e(r['kind'])}</td><td>{_e(r['stage'])}</td><td>{_e(r['deadline'] or '—')}</td>"
        f"<td>{_countdown(r)}</td></tr>" for r in view.open_requests)
    open_table = (f"<table><tr><th>request</th><th>kind</th><th>stage</th><th>deadline</th><th>time left</th></tr>"
                  f"{rows}</table>" if rows else "<p>No open requests.</p>")
    recent = "".join(
        f"<tr><td><a href='/dashboard/requests/{_e(r['request_id'])}'>{_e(r['request_id'])}</a></td>"
        f"<td>{_e(r['stage'])}</td><td>{_e(r['complied_at'] or '—')}</td>"
        f"<td>{_met(r['deadline_met'])}</td></tr>" for r in view.requests if r not in view.open_requests)
    models = "".join(
        f"<h3>{_e(name)}</h3><table><tr><th>registry version</th><th>local</th><th>claim</th><th>state</th>"
        f"<th>certificate sha256</th><th>ledger index</th></tr>"
        + "".join(f"<tr><td>{v.registry_version}</td><td>v{v.version}</td><td>{_e(v.claim or '?')}</td>"
                  f"<td>{_version_state(v)}</td><td><code>{_e(v.envelope_sha256[:16])}…</code></td>"
                  f"<td>{v.index}</td></tr>" for v in versions) + "</table>"
        for name, versions in view.models.items())
    checkpoint = (f"<pre>{_e(view.checkpoint)}</pre>" if view.checkpoint
                  else "<p>No signed checkpoint yet (<code>erasure ledger checkpoint</code>).</p>")
    body = (f"<h2>Open requests ({len(view.open_requests)})</h2>{open_table}"
            f"<h2>Days to exact compliance</h2>{_chart(view.days_to_compliance())}"
            f"<h2>Handled requests</h2>"
            + (f"<table><tr><th>request</th><th>stage</th><th>complied</th><th>deadline</th></tr>{recent}</table>"
               if recent else "<p>None yet.</p>")
            + f"<h2>Models</h2>{models or '<p>No registered versions.</p>'}"
            f"<h2>Ledger</h2><p>{view.size} entries. Latest signed checkpoint:</p>{checkpoint}"
            f"<h3>Witnesses</h3>{_witnesses(ws, view.checkpoint)}")
    return _page("Erasure — compliance desk", body, now)


def _witnesses(ws: Workspace, note: str | None) -> str:
    """Each witness configured for the log: whether the latest checkpoint carries its cosignature
    (verified with its key here), when it cosigned, and how the last request to it went."""
    from ledger.note import verified_cosignatures
    from ledger.witness.collect import read_status, read_witnesses

    try:
        endpoints, _ = read_witnesses(ws)
        cosigned = {c.witness: c for c in verified_cosignatures(note, [e.verifier for e in endpoints])} \
            if note and endpoints else {}
    except ErasureError as err:  # a damaged witness list, or a cosignature that does not verify
        return f"<p class='late'>{_e(err)}</p>"
    if not endpoints:
        return "<p>No witness configured (<code>erasure ledger witness add URL VKEY</code>).</p>"
    status = read_status(ws)
    rows = []
    for endpoint in endpoints:
        found = cosigned.get(endpoint.verifier.vkey)
        last = status.get(endpoint.vkey)
        outcome = "—" if last is None else (f"cosigned size {last.size}" if last.cosigned
                                            else f"<b class='late'>failed</b>: {_e(last.error or '?')}")
        rows.append(f"<tr><td>{_e(endpoint.name)}</td><td>{_e(endpoint.url)}</td>"
                    + (f"<td>cosigned (verified)</td><td>{_e(datetime.fromtimestamp(found.timestamp, UTC).isoformat())}"
                       f"</td>" if found else "<td><b class='late'>no cosignature</b></td><td>—</td>")
                    + f"<td>{outcome}</td></tr>")
    return ("<table><tr><th>witness</th><th>URL</th><th>latest checkpoint</th><th>cosigned at</th>"
            f"<th>last request</th></tr>{''.join(rows)}</table>")


def render_timeline(ws: Workspace, request_id: str, now: datetime | None = None) -> str:
    from unlearning.operations.status import request_status

    now = now or datetime.now(UTC)
    status = request_status(ws, request_id, now)
    with open_ledger(ws, create=False) as ledger:
        index = {"received": ledger.find(entries.received_key(request_id)),
                 "planned": ledger.find(entries.planned_key(request_id)),
                 "rejected": ledger.find(entries.rejected_key(request_id)),
                 "failed": ledger.find(entries.failed_key(request_id))}
        steps = [(stage, at, index[stage], "") for stage, at in status["stages"].items() if at]
        for model, info in status["models"].items():
            excluded = info["excluded"]
            if excluded:
                steps.append(("excluded", excluded["certified_at"],
                              ledger.find(entries.excluded_key(request_id, model)),
                              f"{model} v{excluded['version']}, certificate <code>{_e(excluded['certificate_sha256'])}"
                              f"</code><br><code>erasure verify models:/{_e(model)}/{excluded['version']}</code>"))
            elif info["exclusion_deferred"]:
                steps.append(("exclusion deferred", None, None, _e(info["exclusion_deferred"])))
            for shard, restored in info["restored"].items():
                steps.append((f"restored shard {shard}", restored and restored["at"],
                              ledger.find(entries.restored_key(request_id, model, int(shard))),
                              (f"{model} v{restored['version']}, certificate <code>"
                               f"{_e(restored['certificate_sha256'])}</code><br><code>erasure verify "
                               f"models:/{_e(model)}/{restored['version']}</code>") if restored else "retrain pending"))
    steps.sort(key=lambda s: (s[1] is None, s[1] or ""))
    rows = "".join(f"<tr><td>{_e(stage)}</td><td>{_e(at or '—')}</td><td>{'' if i is None else i}</td>"
                   f"<td>{detail}</td></tr>" for stage, at, i, detail in steps)
    body = (f"<p><a href='/dashboard'>← all requests</a></p><h2>Request {_e(request_id)}</h2>"
            f"<p>{_e(status['kind'] or '')} · stage <b>{_e(status['stage'])}</b>"
            + (f" · {_e(status['reason'])}" if status["reason"] else "")
            + (f" · deadline {_e(status['deadline'])} {_countdown(status)}" if status["deadline"] else "")
            + f"</p><table><tr><th>stage</th><th>at</th><th>ledger index</th><th>version, certificate, check</th></tr>"
            f"{rows}</table><p>Check the ledger: <code>erasure ledger verify</code>; "
            f"this request: <code>erasure status {_e(request_id)}</code></p>")
    return _page(f"Request {request_id}", body, now)


def _countdown(status: dict) -> str:
    if status.get("time_left_s") is None:
        return _met(status.get("deadline_met")) if status.get("deadline") else "—"
    return f"<span class='countdown' data-deadline='{_e(status['deadline'])}'>{_left(status['time_left_s'])}</span>"


def _left(seconds: float) -> str:
    if seconds < 0:
        return "overdue"
    days, rest = divmod(int(seconds), 86400)
    return f"{days} d {rest // 3600} h {rest % 3600 // 60} min"


def _met(met: bool | None) -> str:
    return {True: "met", False: "<b class='late'>missed</b>", None: "—"}[met]


def _version_state(v) -> str:  # type: ignore[no-untyped-def]
    if v.purged_at:
        return "purged"
    if v.certified:
        return "<b>@certified</b>"
    return f"superseded by {v.superseded_by}" if v.superseded_by else "registered"


def _chart(points: list[tuple[str, float]]) -> str:
    """Days to exact compliance per complied request, as an inline SVG bar chart (newest right)."""
    if not points:
        return "<p>No request complied yet.</p>"
    points = points[::-1][-60:]
    top = max(max(d for _, d in points), 1e-9)
    width, height, bar = 640, 160, min(640 / len(points), 24)
    bars = "".join(
        f"<rect x='{i * bar + 1:.1f}' y='{height - 20 - (d / top) * (height - 40):.1f}' width='{max(bar - 2, 1):.1f}' "
        f"height='{(d / top) * (height - 40):.1f}'><title>{_e(rid)}: {_span(d)}</title></rect>"
        for i, (rid, d) in enumerate(points))
    return (f"<svg class='chart' width='{width}' height='{height}' role='img' aria-label='days to exact compliance'>"
            f"{bars}<text x='0' y='{height - 4}'>{len(points)} requests; longest {_span(top)}</text></svg>")


def _span(days: float) -> str:
    return f"{days:.1f} days" if days >= 1 else f"{days * 24:.2f} hours"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


_STYLE = """body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;font-size:.9rem}th{background:#f3f3f3}
code,pre{font-size:.85rem}pre{background:#f6f6f6;padding:.5rem}.late{color:#b00}.chart rect{fill:#4a7bd0}"""
_SCRIPT = """for(const el of document.querySelectorAll('.countdown')){const end=Date.parse(el.dataset.deadline);
const tick=()=>{const s=Math.floor((end-Date.now())/1000);if(s<0){el.textContent='overdue';return}
el.textContent=`${Math.floor(s/86400)} d ${Math.floor(s%86400/3600)} h ${Math.floor(s%3600/60)} min ${s%60} s`};
tick();setInterval(tick,1000)}"""


def _page(title: str, body: str, now: datetime | None = None) -> str:
    stamp = f"<p class='stamp'>as of {_e((now or datetime.now(UTC)).isoformat(timespec='seconds'))}</p>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>{stamp}{body}"
            f"<script>{_SCRIPT}</script></body></html>")
