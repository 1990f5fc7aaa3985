"""The console's sessions over real HTTP requests on a real SQLite file: the cookie and what the database
keeps of it, expiry, idle timeout and logout; the login throttle (429 and a doubling delay, checked
before the password); single sign-on through a trusted proxy's header, and only from a trusted address."""
from __future__ import annotations

import glob
import hashlib
import os
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from console_site import PASSWORD, csrf_of, login, make_site, session_client


@pytest.fixture
def site(tmp_path):
    s = make_site(str(tmp_path), with_media=False)
    yield s
    s.db.close()


def sessions_of(site, name: str) -> list:
    from xvad.service.store.schema import User, WebSession
    with site.db.session() as s:
        return list(s.scalars(select(WebSession).join(User, User.id == WebSession.user_id).where(User.name == name)))


def test_cookie_attributes_and_only_its_hash_is_kept(site):
    c = site.client()
    r = login(c, "rev")
    assert r.status_code == 303
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("xvad_session="))
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= attrs and "secure" not in attrs
    assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()
    assert f"max-age={8 * 3600}" in cookie.lower()
    secret = c.cookies.get("xvad_session")
    assert len(secret) >= 43                                          # 32 random bytes, base64
    rows = sessions_of(site, "rev")
    assert [row.id for row in rows] == [hashlib.sha256(secret.encode()).hexdigest()]
    assert rows[0].expires_at - rows[0].created_at == timedelta(hours=8)
    for path in glob.glob(os.path.join(site.settings.data, "xvad.db*")):
        assert secret.encode() not in open(path, "rb").read(), path
    # over https the cookie is Secure
    s = site.client(https=True)
    r = login(s, "rev")
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("xvad_session="))
    assert "; secure" in cookie.lower()


def test_session_expiry_idle_timeout_and_logout(site):
    from xvad.service.store.schema import WebSession
    c, token = session_client(site, "rev")
    assert c.get("/").status_code == 200
    key = sessions_of(site, "rev")[0].id

    def move(**values):
        with site.db.transaction() as s:
            s.execute(update(WebSession).where(WebSession.id == key).values(**values))

    row = sessions_of(site, "rev")[0]
    move(expires_at=row.created_at - timedelta(seconds=1))             # past its expiry
    r = c.get("/")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert c.get("/api/alerts").status_code == 401
    move(expires_at=row.expires_at, last_seen_at=row.last_seen_at - timedelta(minutes=30, seconds=1))   # idle
    assert c.get("/").status_code == 303
    move(last_seen_at=row.last_seen_at - timedelta(minutes=29))                                          # not yet
    assert c.get("/").status_code == 200
    # logout: the cookie is cleared and the session revoked, so the old cookie opens nothing
    old = c.cookies.get("xvad_session")
    r = c.post("/logout", data={"csrf": token})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert any(k == "set-cookie" and v.startswith("xvad_session=") and "max-age=0" in v.lower()
               for k, v in r.headers.multi_items())
    assert sessions_of(site, "rev")[0].revoked
    again = site.client()
    again.cookies.set("xvad_session", old)
    assert again.get("/").status_code == 303 and again.get(f"/api/alerts/{site.alerts[0]['id']}").status_code == 401
    from xvad.service import audit
    actions = [e["action"] for e in audit.entries(site.db, target="user:rev", limit=10)[0]]
    assert actions[:2] == ["user.logout", "user.login"]


def test_a_new_login_ends_the_session_the_browser_had(site):
    """Logging in again (another account, the same browser) ends the old session: a cookie planted or
    left behind is never kept alive by a login."""
    from console_site import csrf_of
    c = site.client()
    assert login(c, "rev").status_code == 303
    old = c.cookies.get("xvad_session")
    fresh = site.client()                                 # a login form, as any visitor gets it
    page = fresh.get("/login")
    c.cookies.set("xvad_login", fresh.cookies.get("xvad_login"), path="/login")
    r = c.post("/login", data={"username": "admin", "password": PASSWORD, "csrf": csrf_of(page.text), "next": "/"})
    assert r.status_code == 303
    new = c.cookies.get("xvad_session")
    assert new and new != old
    assert [row.revoked for row in sessions_of(site, "rev")] == [True]     # revoked in the database
    stale = site.client()
    stale.cookies.set("xvad_session", old)
    assert stale.get("/", follow_redirects=False).status_code in (302, 303, 401)


def test_disabled_user_loses_their_session(site):
    from xvad.service import auth
    c, _ = session_client(site, "viewer")
    assert c.get("/").status_code == 200
    auth.update_user(site.db, "viewer", disabled=True)
    assert c.get("/").status_code == 303
    assert login(site.client(), "viewer").status_code == 401


def test_changing_a_user_on_the_users_page_ends_their_sessions(site):
    viewer, _ = session_client(site, "viewer")
    admin, token = session_client(site, "admin")
    r = admin.post("/users/viewer", data={"csrf": token, "role": "reviewer", "cameras": "A"})
    assert r.status_code == 303
    assert viewer.get("/").status_code == 303                        # their old session is over
    from xvad.service import audit, auth
    u = auth.check_password(site.db, "viewer", PASSWORD)
    assert (u.role, u.cameras) == ("reviewer", ("A",))
    entry = audit.entries(site.db, action="user.changed", target="user:viewer", limit=1)[0][0]
    assert entry["actor"] == "admin"
    # adding a user from the page
    r = admin.post("/users", data={"csrf": token, "name": "ann", "role": "viewer", "cameras": "B",
                                   "password": "ann-password"})
    assert r.status_code == 303
    assert auth.check_password(site.db, "ann", "ann-password").cameras == ("B",)
    assert admin.post("/users", data={"csrf": token, "name": "bob", "role": "viewer", "cameras": "Z",
                                      "password": "bob-password"}).status_code == 422
    assert admin.post("/users/admin", data={"csrf": token, "role": "viewer"}).status_code == 422


def test_repeated_wrong_passwords_get_429_and_a_doubling_delay(site):
    from xvad.console.sessions import FIRST_DELAY, MAX_DELAY
    from xvad.service import audit
    from xvad.service.store.schema import LoginAttempt
    limit = site.settings.console.login_failures
    c = site.client()
    for _ in range(limit):
        assert login(c, "rev", "wrong-password").status_code == 401
    # the next attempt waits, even with the right password (checked before any password is)
    r = login(c, "rev")
    assert r.status_code == 429, r.text
    assert "too many failed logins; try again in" in r.text
    assert int(r.headers["retry-after"]) == FIRST_DELAY
    assert "xvad_session" not in r.headers.get("set-cookie", "")

    def age(seconds: float):
        with site.db.transaction() as s:
            for a in s.scalars(select(LoginAttempt)):
                a.at = a.at - timedelta(seconds=seconds)

    age(FIRST_DELAY + 1)                                   # the delay has passed: one more try is allowed
    assert login(c, "rev", "wrong-again").status_code == 401
    r = login(c, "rev")
    assert r.status_code == 429 and int(r.headers["retry-after"]) == 2 * FIRST_DELAY      # doubled
    age(2 * FIRST_DELAY + 1)
    assert login(c, "rev", "wrong-again").status_code == 401
    assert int(login(c, "rev").headers["retry-after"]) == 4 * FIRST_DELAY
    # the address is throttled too: another user name from the same address waits as well
    r = login(c, "viewer")
    assert r.status_code == 429
    # from another address, another user logs in
    assert login(site.client(address="10.9.8.7"), "viewer").status_code == 303
    # failures older than 15 minutes no longer count; the right password then works
    age(15 * 60)
    assert login(c, "rev").status_code == 303
    failed = audit.entries(site.db, action="user.login_failed", target="user:rev", limit=100)[1]
    assert failed == limit + 2
    assert MAX_DELAY == 15 * 60


def test_the_delay_is_capped_at_15_minutes():
    from xvad.console.sessions import delay_after
    assert [delay_after(n, 5) for n in (0, 4, 5, 6, 7, 10)] == [0, 0, 30, 60, 120, 900]
    assert delay_after(40, 5) == 900


def test_login_form_without_a_password_or_user_fails_plainly(site):
    c = site.client()
    page = c.get("/login")
    r = c.post("/login", data={"username": "", "password": "", "csrf": csrf_of(page.text)})
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    r = login(c, "nobody", "whatever-pass")
    assert r.status_code == 401


# -- single sign-on through a trusted proxy ------------------------------------------------------------
def test_proxy_header_is_honoured_only_from_a_trusted_address(tmp_path):
    s = make_site(str(tmp_path), console={"trusted_proxy_header": "X-Remote-User",
                                          "trusted_proxies": ["127.0.0.1", "10.1.0.0/16"]}, with_media=False)
    try:
        for address in ("127.0.0.1", "10.1.2.3"):
            c = s.client(address=address)
            r = c.get("/", headers={"X-Remote-User": "rev_a"})
            assert r.status_code == 200, address
            assert "rev_a (reviewer)" in r.text
            assert c.cookies.get("xvad_session")                       # a session, for CSRF
            # the session's CSRF token is needed for forms, as for anyone
            assert c.post("/cameras/A/stop", headers={"X-Remote-User": "rev_a"}).status_code == 403
            form = {"data": {"csrf": csrf_of(r.text)}, "headers": {"X-Remote-User": "rev_a"}}
            assert c.post("/cameras/A/stop", **form).status_code == 303
            assert c.post("/cameras/A/start", **form).status_code == 303
            # and the camera limit holds
            assert c.get(f"/alerts/{s.of('B')[0]['id']}", headers={"X-Remote-User": "rev_a"}).status_code == 404
        for address in ("10.2.0.1", "192.168.1.5", "testclient"):
            c = s.client(address=address)
            r = c.get("/", headers={"X-Remote-User": "admin"})
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), address
            assert c.get("/api/alerts", headers={"X-Remote-User": "admin"}).status_code == 401
        c = s.client(address="127.0.0.1")
        assert c.get("/", headers={"X-Remote-User": "nobody"}).status_code == 303          # no such user
        from xvad.service import audit, auth
        auth.update_user(s.db, "viewer", disabled=True)
        assert c.get("/", headers={"X-Remote-User": "viewer"}).status_code == 303          # disabled
        logins = audit.entries(s.db, action="user.login", target="user:rev_a", limit=10)[0]
        assert logins and all(e["details"]["via"] == "proxy" for e in logins)
    finally:
        s.db.close()


def test_proxy_header_is_ignored_when_not_configured(site):
    c = site.client(address="127.0.0.1")
    r = c.get("/", headers={"X-Remote-User": "admin"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_console_settings_from_the_yaml_file(tmp_path):
    from xvad.errors import ConfigError
    from xvad.service.settings import load_settings
    path = tmp_path / "xvad.yaml"
    path.write_text("console:\n  session_hours: 2\n  idle_minutes: 10\n  login_failures: 3\n"
                    "  trusted_proxy_header: X-Remote-User\n  trusted_proxies: [10.0.0.0/8, '::1']\n")
    c = load_settings(str(path)).console
    assert (c.session_hours, c.idle_minutes, c.login_failures, c.trusted_proxy_header, c.trusted_proxies) == (
        2, 10, 3, "X-Remote-User", ["10.0.0.0/8", "::1"])
    assert load_settings(str(path)).console.secure_cookies is False
    for text, message in [("console:\n  trusted_proxies: [not-an-address]\n",
                           "console.trusted_proxies[0]: 'not-an-address' is not an IP address or network"),
                          ("console:\n  idle_minutes: 0\n", "console.idle_minutes: must be greater than 0"),
                          ("console:\n  trusted_proxy_header: 'X Remote'\n", "console.trusted_proxy_header"),
                          ("console:\n  sessions: 3\n", "console.sessions: unknown key")]:
        path.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_settings(str(path))
        assert str(e.value).startswith(f"{path}: {message}"), str(e.value)
