"""Ways in that a first review found, each closed and tried here over real requests on a real SQLite
file: an admin limited to some cameras reaching whole-service views, metrics naming every camera,
report downloads and API reads left off the record, parallel logins slipping past the throttle, one
good account resetting an address's failures, and a polling page keeping an idle session alive."""
from __future__ import annotations

import os
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from console_site import PASSWORD, login, make_site, session_client


@pytest.fixture
def site(tmp_path):
    s = make_site(str(tmp_path))
    yield s
    s.db.close()


def bearer(site, name: str) -> dict:
    return {"Authorization": f"Bearer {site.tokens[name]}"}


def entries(site, action: str, target: str) -> list[dict]:
    from xvad.service import audit
    rows, _ = audit.entries(site.db, action=action, target=target)
    return rows


def test_an_admin_limited_to_a_camera_gets_no_whole_service_view(site):
    from xvad.service import auth
    auth.create_user(site.db, "admin_a", "admin", PASSWORD, ["A"])
    site.tokens["admin_a"] = auth.issue_token(site.db, "admin_a")
    c, csrf = session_client(site, "admin_a")
    for path in ("/users", "/audit"):
        assert c.get(path).status_code == 403, path
    # nor can they give themselves every camera, or make an admin who has them
    assert c.post("/users/admin_a", data={"role": "admin", "cameras": "", "csrf": csrf}).status_code == 403
    boss = {"name": "boss", "role": "admin", "password": PASSWORD, "csrf": csrf}
    assert c.post("/users", data=boss).status_code == 403
    assert [u["cameras"] for u in auth.users(site.db) if u["name"] == "admin_a"] == [("A",)]
    assert "boss" not in {u["name"] for u in auth.users(site.db)}
    api = site.client()
    assert api.get("/api/audit", headers=bearer(site, "admin_a")).status_code == 403
    assert api.get("/api/audit", headers=bearer(site, "admin")).status_code == 200
    admin, _ = session_client(site, "admin")
    assert admin.get("/users").status_code == 200 and admin.get("/audit").status_code == 200


def test_metrics_need_a_user_of_every_camera_and_health_counts_only_visible_ones(site):
    c = site.client()
    assert c.get("/metrics", headers=bearer(site, "rev_a")).status_code == 403
    r = c.get("/metrics", headers=bearer(site, "rev"))
    assert r.status_code == 200
    assert c.get("/healthz", headers=bearer(site, "rev_a")).json()["cameras"] == 1
    assert c.get("/healthz", headers=bearer(site, "rev")).json()["cameras"] == 2


def test_the_report_download_and_an_api_read_are_on_the_record(site):
    a = site.of("A")[0]
    with open(os.path.join(a["media"], "report.html"), "w") as f:
        f.write("<html><body>report</body></html>")
    site.db.media_state(a["uid"], "complete", files={"report": "report.html"})
    c = site.client()
    assert c.get(f"/api/alerts/{a['id']}", headers=bearer(site, "rev")).status_code == 200
    viewed = entries(site, "alert.viewed", f"alert:{a['id']}")
    assert [(e["actor"], e["details"]) for e in viewed] == [("rev", {"via": "api"})]
    r = c.get(f"/api/alerts/{a['id']}/report.html", headers=bearer(site, "rev"))
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    exported = entries(site, "alert.exported", f"alert:{a['id']}")
    assert [(e["actor"], e["details"]) for e in exported] == [("rev", {"file": "report.html"})]
    # the clip, fetched by the page's player in many range requests, is not an export
    assert c.get(f"/api/alerts/{a['id']}/clip.mp4", headers=bearer(site, "rev")).status_code == 200
    assert len(entries(site, "alert.exported", f"alert:{a['id']}")) == 1


def test_parallel_login_attempts_all_count_before_any_password_is_checked(site):
    from xvad.console import sessions
    limit = site.settings.console.login_failures
    results: list[tuple[float, int | None]] = []
    start = threading.Barrier(12)

    def attempt() -> None:
        start.wait()
        results.append(sessions.claim_attempt(site.db, "rev", "10.0.0.9", limit))

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [r for r in results if r[1] is not None]
    assert len(claimed) == limit                                 # the others were told to wait
    assert all(wait > 0 for wait, attempt_id in results if attempt_id is None)


def test_one_good_account_does_not_reset_an_address_failures(site):
    limit = site.settings.console.login_failures
    c = site.client(address="10.0.0.7")
    names = ["admin", "rev", "rev_a", "nobody", "someone"]
    for i in range(limit):
        assert login(c, names[i % len(names)], "wrong-password").status_code == 401
        good = site.client(address="10.0.0.7")
        if i < limit - 1:
            assert login(good, "viewer").status_code == 303        # a valid account logs in between
    r = login(site.client(address="10.0.0.7"), "another-name", "guess")
    assert r.status_code == 429, r.text


def test_the_live_queue_polling_does_not_keep_an_idle_session_alive(site):
    from xvad.service.store.schema import User, WebSession
    c, _ = session_client(site, "rev")

    def seen():
        with site.db.session() as s:
            return s.scalar(select(WebSession.last_seen_at).join(User, User.id == WebSession.user_id)
                            .where(User.name == "rev"))

    with site.db.transaction() as s:
        s.execute(update(WebSession).values(last_seen_at=seen() - timedelta(minutes=20)))
    before = seen()
    assert c.get("/queue/live").status_code == 200
    assert seen() == before                                          # a page polling by itself
    assert c.get("/").status_code == 200
    assert seen() > before + timedelta(minutes=19)                   # a person at work
