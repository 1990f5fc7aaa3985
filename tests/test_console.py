"""The review console over real HTTP requests against the real app on a real SQLite file: nothing
without a session or token, roles and camera limits, CSRF on every form, path traversal, SQL injection
through the filters, the queue's order and counts, the export, the security headers."""
from __future__ import annotations

import hashlib
import http.client
import io
import json
import re
import zipfile

import pytest
from sqlalchemy import func, select

from console_site import ALERTS, PASSWORD, csrf_of, login, make_site, serving, session_client

PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/static/{name}")}
MACHINE = ("/api/", "/healthz", "/metrics")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = make_site(str(tmp_path_factory.mktemp("console")))
    yield s
    s.db.close()


def routes(app) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, from its own route table."""
    out = []
    for r in app.routes:
        for m in sorted(getattr(r, "methods", None) or []):
            if m != "HEAD":
                out.append((m, r.path))
    return out


def filled(path: str, alert_id: int) -> str:
    return (path.replace("{alert_id}", str(alert_id)).replace("{name}", "clip.mp4").replace("{action}", "stop")
            .replace("{id}", str(alert_id)))


# -- nothing without a session or token ------------------------------------------------------------
def test_every_route_unauthenticated_is_refused(site):
    table = routes(site.app)
    paths = {p for _, p in table}
    # the enumeration sees the API, the media route and the console's pages
    assert {"/api/alerts", "/api/alerts/{alert_id}/{name}", "/", "/alerts/{alert_id}", "/cameras", "/audit",
            "/users", "/alerts/{alert_id}/export", "/alerts/{alert_id}/verdict", "/logout"} <= paths
    assert PUBLIC <= set(table)
    a = site.alerts[0]["id"]
    c = site.client()
    for method, path in table:
        if (method, path) in PUBLIC:
            continue
        url = filled(path, a)
        for cookies in ({}, {"xvad_session": "not-a-session"}):
            c.cookies.clear()
            for k, v in cookies.items():
                c.cookies.set(k, v)
            r = c.request(method, url)
            if path.startswith(MACHINE):
                assert r.status_code == 401, (method, url, r.status_code)
            else:
                assert r.status_code == 303, (method, url, r.status_code)
                assert r.headers["location"].startswith("/login?next="), (method, url)
            assert b"ftyp" not in r.content[:64], (method, url)          # no clip came back
    # a bad token is no better than none
    r = c.get(filled("/api/alerts/{alert_id}/clip.mp4", a), headers={"Authorization": "Bearer xvad_1_wrong"})
    assert r.status_code == 401


def test_login_redirects_only_to_local_paths(site):
    c = site.client()
    for target, expected in [("/alerts/1", "/alerts/1"), ("//evil.example/x", "/"), ("https://evil.example", "/"),
                             ("/\\evil.example", "/"), ("javascript:alert(1)", "/")]:
        c.cookies.clear()
        r = login(c, "admin", next_=target)
        assert r.status_code == 303 and r.headers["location"] == expected, (target, r.headers.get("location"))


def test_static_files_are_only_the_consoles_own(site):
    c = site.client()
    assert c.get("/static/console.css").headers["content-type"].startswith("text/css")
    assert c.get("/static/alert.js").headers["content-type"].startswith("text/javascript")
    for name in ["..%2F__init__.py", "login.html.j2", "..%2F..%2Fservice%2Fapi.py", "nope.css"]:
        assert c.get(f"/static/{name}").status_code == 404, name


# -- roles and camera limits -----------------------------------------------------------------------
def test_viewer_cannot_decide_and_reviewer_can(site):
    a = site.alerts[1]["id"]
    viewer, token = session_client(site, "viewer")
    page = viewer.get(f"/alerts/{a}")
    assert page.status_code == 200 and f'action="/alerts/{a}/verdict"' not in page.text
    r = viewer.post(f"/alerts/{a}/verdict", data={"verdict": "dismissed", "reason": "looks calm", "csrf": token})
    assert r.status_code == 403
    from xvad.service import review
    assert review.verdicts(site.db, a) == []
    rev, token = session_client(site, "rev")
    r = rev.post(f"/alerts/{a}/verdict", data={"verdict": "dismissed", "reason": "  a man on a phone  ",
                                                 "csrf": token})
    assert r.status_code == 303 and r.headers["location"] == f"/alerts/{a}#verdicts"
    page = rev.get(f"/alerts/{a}").text
    assert "a man on a phone" in page and "dismissed" in page
    # a reason must be given
    r = rev.post(f"/alerts/{a}/verdict", data={"verdict": "confirmed", "reason": "   ", "csrf": token})
    assert r.status_code == 422
    r = rev.post(f"/alerts/{a}/verdict", data={"verdict": "deleted", "reason": "x", "csrf": token})
    assert r.status_code == 422
    assert [(v["verdict"], v["reason"], v["user"]) for v in review.verdicts(site.db, a)] == [
        ("dismissed", "a man on a phone", "rev")]


def test_reviewer_limited_to_camera_a_gets_not_found_for_b(site):
    c, token = session_client(site, "rev_a")
    a, b = site.of("A")[0]["id"], site.of("B")[0]["id"]
    queue = c.get("/").text
    listed = {int(x) for x in re.findall(r'href="/alerts/(\d+)"', queue)}
    assert listed == {x["id"] for x in site.of("A")}
    assert c.get("/?camera=B").status_code == 400           # an unknown camera, as far as this user knows
    assert not re.findall(r'href="/alerts/(\d+)"', c.get("/?camera=B").text)
    assert not re.findall(r'href="/alerts/(\d+)"', c.get("/queue/live?camera=B").text)
    assert c.get(f"/alerts/{a}").status_code == 200
    for url in [f"/alerts/{b}", f"/alerts/{b}/export", f"/api/alerts/{b}", f"/api/alerts/{b}/clip.mp4"]:
        r = c.get(url)
        assert r.status_code == 404, url
        assert b"ftyp" not in r.content[:64] and b"PK" not in r.content[:2], url
    assert c.get(f"/api/alerts/{a}/clip.mp4").status_code == 200      # the session opens A's media
    r = c.post(f"/alerts/{b}/verdict", data={"verdict": "confirmed", "reason": "seen", "csrf": token})
    assert r.status_code == 404
    assert c.post("/cameras/B/stop", data={"csrf": token}).status_code == 404
    assert "/cameras/B/" not in c.get("/cameras").text and "/cameras/A/stop" in c.get("/cameras").text
    api = c.get("/api/alerts").json()
    assert {x["camera"] for x in api["alerts"]} == {"A"}
    # the same with the API token of the same user
    h = {"Authorization": f"Bearer {site.tokens['rev_a']}"}
    assert site.client().get(f"/api/alerts/{b}/clip.mp4", headers=h).status_code == 404
    assert site.client().get(f"/api/alerts/{a}/clip.mp4", headers=h).status_code == 200


def test_admin_pages_are_for_admins(site):
    c, token = session_client(site, "rev")
    assert c.get("/audit").status_code == 403
    assert c.get("/users").status_code == 403
    r = c.post("/users", data={"csrf": token, "name": "eve", "role": "admin", "password": "x" * 10})
    assert r.status_code == 403
    from xvad.service import auth
    assert "eve" not in {u["name"] for u in auth.users(site.db)}


# -- CSRF --------------------------------------------------------------------------------------------
def test_every_form_without_its_csrf_token_is_refused(site):
    a = site.of("A")[1]["id"]
    c, token = session_client(site, "admin")
    from xvad.service import auth, review
    before = (len(review.verdicts(site.db, a)), [u["name"] for u in auth.users(site.db)])
    posts = [(m, p) for m, p in routes(site.app) if m == "POST" and (m, p) not in PUBLIC]
    assert len(posts) >= 5
    forms = {"/alerts/{alert_id}/verdict": {"verdict": "confirmed", "reason": "forged"},
             "/users": {"name": "mallory", "role": "admin", "password": "forged-pass"},
             "/users/{name}": {"role": "viewer"}}
    for _, path in posts:
        url = filled(path, a).replace("/users/clip.mp4", "/users/rev")
        for extra in ({}, {"csrf": "wrong"}, {"csrf": token[:-1]}):
            r = c.post(url, data={**forms.get(path, {}), **extra})
            assert r.status_code == 403, (url, extra, r.status_code)
    assert (len(review.verdicts(site.db, a)), [u["name"] for u in auth.users(site.db)]) == before
    assert {c["name"]: c["enabled"] for c in site.db.cameras()} == {"A": True, "B": True}
    # the API from the browser: the header is the token; a Bearer token needs none
    assert c.post("/api/cameras/A/stop").status_code == 403
    assert c.post("/api/cameras/A/stop", headers={"X-CSRF-Token": token}).status_code == 200
    r = site.client().post("/api/cameras/A/start", headers={"Authorization": f"Bearer {site.tokens['admin']}"})
    assert r.status_code == 200
    assert {c["name"]: c["enabled"] for c in site.db.cameras()} == {"A": True, "B": True}
    # the login form too needs its token, bound to the pre-session cookie
    fresh = site.client()
    r = fresh.post("/login", data={"username": "admin", "password": PASSWORD, "csrf": "made-up"})
    assert r.status_code == 403 and "xvad_session" not in r.headers.get("set-cookie", "")
    other = site.client()
    token_of_other = csrf_of(other.get("/login").text)
    fresh.get("/login")
    r = fresh.post("/login", data={"username": "admin", "password": PASSWORD, "csrf": token_of_other})
    assert r.status_code == 403


def test_camera_stop_and_start_from_the_page_are_recorded(site):
    from xvad.service import audit
    c, token = session_client(site, "rev")
    assert c.post("/cameras/B/stop", data={"csrf": token}).status_code == 303
    assert {x["name"]: x["enabled"] for x in site.db.cameras()}["B"] is False
    assert "/cameras/B/start" in c.get("/cameras").text
    assert c.post("/cameras/B/start", data={"csrf": token}).status_code == 303
    assert {x["name"]: x["enabled"] for x in site.db.cameras()}["B"] is True
    rows, _ = audit.entries(site.db, target="camera:B", limit=10)
    assert [(e["action"], e["actor"]) for e in rows[:2]] == [("camera.started", "rev"), ("camera.stopped", "rev")]
    viewer, vtoken = session_client(site, "viewer")
    assert viewer.post("/cameras/B/stop", data={"csrf": vtoken}).status_code == 403


# -- path traversal and SQL injection ---------------------------------------------------------------
@pytest.fixture(scope="module")
def server(site):
    """The same app on a real uvicorn on loopback (raw paths reach it byte for byte)."""
    with serving(site.app) as port:
        yield port


def raw_get(port: int, path: str, headers: dict) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_path_traversal_through_media_names(site, server):
    c, _ = session_client(site, "rev_a")
    cookie = {"Cookie": f"xvad_session={c.cookies.get('xvad_session')}"}
    a, b = site.of("A")[0], site.of("B")[0]
    status, body = raw_get(server, f"/api/alerts/{a['id']}/clip.mp4", cookie)
    assert status == 200 and body == open(a["media"] + "/clip.mp4", "rb").read()
    i = a["id"]
    for path in [f"/api/alerts/{i}/..%2F..%2F..%2Fxvad.db", f"/api/alerts/{i}/../../../xvad.db",
                 f"/api/alerts/{i}/%2E%2E%2F%2E%2E%2F%2E%2E%2Fxvad.db", f"/api/alerts/{i}/%2Fetc%2Fpasswd",
                 f"/api/alerts/{i}/..%2F..%2FB%2F{b['uid']}%2Fclip.mp4", f"/api/alerts/{i}/..%5C..%5Cxvad.db",
                 f"/api/alerts/{i}/clip.mp4%00.html", f"/api/alerts/{i}/{site.settings.data}/xvad.db",
                 "/static/..%2F..%2F..%2Fservice%2Fstore%2Fschema.py", "/static/%2E%2E%2Faccess.py"]:
        status, body = raw_get(server, path, cookie)
        assert status in (400, 404, 422), (path, status)
        assert not body.startswith(b"SQLite") and b"root:" not in body and b"ftyp" not in body[:64], path


def test_sql_injection_through_the_filters(site):
    from xvad.service.store.schema import Alert
    c, _ = session_client(site, "admin")
    with site.db.session() as s:
        before = s.scalar(select(func.count()).select_from(Alert))
    for params in [{"camera": "A' OR '1'='1"}, {"camera": "A'; DROP TABLE alerts; --"},
                   {"state": "closed' OR '1'='1"}, {"review": "unreviewed' OR 1=1 --"},
                   {"since": "2020-01-01' OR '1'='1"}, {"until": "1; DELETE FROM alerts"},
                   {"min_score": "0 OR 1=1"}, {"page": "1; DROP TABLE alerts"}]:
        r = c.get("/", params=params)
        shown = {int(x) for x in re.findall(r'href="/alerts/(\d+)"', r.text)}
        if "page" in params:
            assert r.status_code == 200 and len(shown) == len(ALERTS)   # a bad page number is page 1
        else:
            assert r.status_code == 400 and not shown, (params, r.status_code)
    for params in [{"target": "alert:1' OR '1'='1"}, {"target": "x'; DELETE FROM audit_log; --"}]:
        r = c.get("/audit", params=params)
        assert r.status_code == 200 and "0 entries" in r.text, params
    assert c.get("/audit", params={"action": "user.login' OR 1=1 --"}).status_code == 400
    with site.db.session() as s:
        after = s.scalar(select(func.count()).select_from(Alert))
    assert after == before
    # and the filters give the right result: a brute-force count over what was inserted
    for params, keep in [({"camera": "A"}, lambda a: a["camera"] == "A"),
                         ({"min_score": "0.9"}, lambda a: a["score"] >= 0.9),
                         ({"state": "closed", "camera": "B"}, lambda a: a["state"] == "closed" and a["camera"] == "B"),
                         ({"since": "2026-11-30T08:05", "until": "2026-11-30T08:15"},
                          lambda a: "08:05" <= a["started_at"].strftime("%H:%M") < "08:15")]:
        shown = {int(x) for x in re.findall(r'href="/alerts/(\d+)"', c.get("/", params=params).text)}
        assert shown == {a["id"] for a in site.alerts if keep(a)}, params


# -- the queue ---------------------------------------------------------------------------------------
def test_queue_order_counts_and_live_fragment(tmp_path):
    from xvad.service import auth, review
    s = make_site(str(tmp_path), with_media=False)
    rev = auth.check_password(s.db, "rev", PASSWORD)
    decided = s.of("A")[2]["id"]                                   # the newest alert of A
    review.add_verdict(s.db, decided, rev, "confirmed", "two people fighting")
    c, _ = session_client(s, "rev")
    page = c.get("/").text
    order = [int(x) for x in re.findall(r'<td><a href="/alerts/(\d+)">', page)]
    unreviewed = sorted((a for a in s.alerts if a["id"] != decided), key=lambda a: a["started_at"], reverse=True)
    assert order == [a["id"] for a in unreviewed] + [decided]
    counts = dict(re.findall(r'<td><a href="/\?camera=(\w)">\w</a></td>\s*<td class="num[^"]*">(\d+)</td>', page))
    assert counts == {"A": str(len(s.of("A")) - 1), "B": str(len(s.of("B")))}
    live = c.get("/queue/live?review=confirmed")
    assert live.status_code == 200 and [int(x) for x in re.findall(r'href="/alerts/(\d+)"', live.text)] == [decided]
    s.db.close()


# -- the export and the record ------------------------------------------------------------------------
def test_export_zip_holds_report_record_verdicts_and_audit(site):
    a = site.of("A")[0]
    with open(a["media"] + "/report.html", "w") as f:
        f.write("<!doctype html><html><body><h1>Decision report</h1></body></html>")
    site.db.media_state(a["uid"], "complete", files={"report": "report.html"})
    c, token = session_client(site, "rev")
    assert c.get(f"/alerts/{a['id']}").status_code == 200                     # alert.viewed
    c.post(f"/alerts/{a['id']}/verdict", data={"verdict": "escalated", "reason": "needs the site manager",
                                               "csrf": token})
    r = c.get(f"/alerts/{a['id']}/export")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert "attachment" in r.headers["content-disposition"]
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(z.namelist()) == ["alert.json", "audit.jsonl", "report.html", "verdicts.json"]
    assert z.read("report.html") == open(a["media"] + "/report.html", "rb").read()
    record = json.loads(z.read("alert.json"))
    assert record["id"] == a["id"] and record["checkpoint_id"] == "ckpt-test" and record["threshold"] == 0.5
    assert record["policy"] == "3/5" and record["xvad_version"]
    verdicts = json.loads(z.read("verdicts.json"))
    assert [(v["verdict"], v["reason"], v["user"]) for v in verdicts][-1] == ("escalated", "needs the site manager",
                                                                            "rev")
    entries = [json.loads(line) for line in z.read("audit.jsonl").decode().splitlines()]
    assert entries and {e["target"] for e in entries} == {f"alert:{a['id']}"}
    actions = [e["action"] for e in entries]
    assert actions[-3:] == ["alert.viewed", "alert.decided", "alert.exported"]
    assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)
    # each entry's hash, recomputed here from its fields, as the chain defines it
    for e in entries:
        content = {k: e[k] for k in ("id", "at", "actor", "action", "target", "details", "prev_hash")}
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        assert hashlib.sha256(text.encode()).hexdigest() == e["hash"]
    # the report downloads as an attachment, not as a page of the console
    r = c.get(f"/api/alerts/{a['id']}/report.html")
    assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment")


def test_security_headers_on_pages_api_and_media(site):
    c, _ = session_client(site, "admin")
    for url in ["/", f"/alerts/{site.alerts[0]['id']}", "/api/alerts", f"/api/alerts/{site.alerts[0]['id']}/clip.mp4",
                "/login", "/static/console.css"]:
        h = c.get(url).headers
        csp = h["content-security-policy"]
        for part in ["default-src 'self'", "img-src 'self' data:", "media-src 'self'", "object-src 'none'",
                     "frame-ancestors 'none'"]:
            assert part in csp, (url, part)
        assert h["x-content-type-options"] == "nosniff" and h["referrer-policy"] == "same-origin", url
    page = c.get("/").text
    assert "<script>" not in page and " on" + "click=" not in page      # no inline script: the CSP allows none
    assert not re.search(r'src="https?://', page)                       # nothing from another site


# -- the alert page -----------------------------------------------------------------------------------
def test_alert_page_while_the_explanation_is_pending_or_failed(site):
    c, _ = session_client(site, "viewer")
    a = site.of("B")[0]
    page = c.get(f"/alerts/{a['id']}").text
    assert f'<video id="clip" src="/api/alerts/{a["id"]}/clip.mp4"' in page          # the clip plays meanwhile
    assert "being prepared" in page and 'id="overlay"' in page and "data-explanation" not in page
    site.db.explanation_state(a["uid"], "failed", error="the clip is too short for one window")
    page = c.get(f"/alerts/{a['id']}").text
    assert "The explanation failed: the clip is too short for one window" in page
    site.db.explanation_state(a["uid"], "pending")
    from xvad.service import audit
    viewed = audit.entries(site.db, action="alert.viewed", target=f"alert:{a['id']}", limit=10)[0]
    assert len(viewed) == 2 and {e["actor"] for e in viewed} == {"viewer"}


def test_score_chart_coordinates():
    from xvad.console.explained import score_chart
    data = {"clip": {"duration": 4.0}, "threshold": 0.6,
            "windows": [{"start": 0.0, "time": 2.0, "score": 0.25}, {"start": 0.25, "time": 4.0, "score": 1.0}]}
    chart = score_chart(data)
    # by hand: x = 28 + (640 - 56) * t / 4, y = 140 - 28 - (140 - 56) * p
    assert chart["points"] == "320.0,91.0 612.0,28.0"
    assert chart["threshold_y"] == round(112 - 84 * 0.6, 1) == 61.6
    assert [t["x"] for t in chart["ticks"]] == [28.0, 174.0, 320.0, 466.0, 612.0]
