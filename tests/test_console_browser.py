"""The review console in a real browser (Debian's chromium driven by Selenium, headless) against the real
app on a real uvicorn on loopback, on an alert made from real footage: surv-fight's fi003 (a fight) then
nofi002 (no fight, the same camera) as the alert's clip, explained by the service's real report worker.

Log in, open the queue, open the alert, play its clip, toggle the heatmap (the canvas pixels change),
record a verdict with a reason, see it in the audit log, export the record (the ZIP). A screenshot of
each page goes to ``$XVAD_SCREENSHOTS`` (else a temporary folder).
"""
from __future__ import annotations

import json
import os
import time
import uuid
import zipfile
from datetime import datetime, timedelta, timezone

import pytest

from conftest import SURV_FIGHT
from console_site import PASSWORD, make_site, serving

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FIGHT = os.path.join(SURV_FIGHT, "fight", "fi003.mp4")
CALM = os.path.join(SURV_FIGHT, "noFight", "nofi002.mp4")
FPS = 8

pytestmark = [
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
                       reason="browser test: /usr/bin/chromium and /usr/bin/chromedriver (Debian's chromium and "
                              "chromium-driver) are not installed"),
    pytest.mark.skipif(not (os.path.exists(FIGHT) and os.path.exists(CALM)),
                       reason="surv-fight footage (fi003, nofi002) not found"),
    pytest.mark.slow,
]


def real_alert(site) -> dict:
    """An alert of camera A whose clip is fi003 then nofi002 at 8 fps, explained by the ReportWorker."""
    import numpy as np

    from xvad.checkpoint import load_model
    from xvad.render import VideoWriter
    from xvad.service.media import ReportJob, ReportWorker
    from xvad.video import read_frames

    fight, _ = read_frames(FIGHT, fps=FPS)
    calm, _ = read_frames(CALM, fps=FPS)
    frames = np.concatenate([fight, calm])
    model = load_model(None)
    uid = str(uuid.uuid4())
    rel = os.path.join("A", uid)
    folder = os.path.join(site.settings.data, "media", rel)
    os.makedirs(folder)
    writer = VideoWriter(os.path.join(folder, "clip.mp4"), FPS)
    for image in frames:
        writer.write(image)
    clip = writer.close()
    started = datetime.now(timezone.utc) - timedelta(minutes=2)
    db = site.db
    alert_id = db.alert_started(uid=uid, camera="A", started_at=started, start_time=1.0, score=0.97,
                                class_name="fight", class_index=1, checkpoint_id=model.checkpoint_id,
                                xvad_version="0.1.0", threshold=0.5, policy="1/1", window=16, stride=2, fps=FPS,
                                media_dir=rel, host="test", pid=os.getpid())
    db.alert_ended(uid, ended_at=started + timedelta(seconds=3), end_time=3.0, peak_score=0.99, reason="scores")
    db.media_state(uid, "complete", files={"clip": "clip.mp4"})

    def done(uid: str, state: str, files: dict, error: str | None) -> None:
        db.explanation_state(uid, state, error=error)
        if files:
            db.media_state(uid, "complete", files=files)

    worker = ReportWorker(done)
    assert worker.submit(ReportJob(uid, "A", clip, folder, model, 0.5, "1/1", 2, FPS))
    worker.close(timeout=600)
    a = db.alert(alert_id)
    assert a["explanation_state"] == "complete", a
    return a


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The site with the real alert, served by uvicorn on 127.0.0.1."""
    s = make_site(str(tmp_path_factory.mktemp("browser")), with_media=False)
    alert = real_alert(s)
    with serving(s.app) as port:
        yield s, alert, f"http://127.0.0.1:{port}"
    s.db.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = os.environ.get("XVAD_SCREENSHOTS") or str(tmp_path_factory.mktemp("screenshots"))
    os.makedirs(folder, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = str(tmp_path_factory.mktemp("downloads"))
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,1100", "--autoplay-policy=no-user-gesture-required"):
        o.add_argument(arg)
    o.add_experimental_option("prefs", {"download.default_directory": downloads, "download.prompt_for_download": False})
    d = webdriver.Chrome(service=Service(DRIVER), options=o)
    d.downloads = downloads
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def wait(what: str, check, timeout: float = 30.0):
    """Poll check() until it is truthy; an element lost to a page load counts as not yet."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    end = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None        # the page is being replaced (a form's redirect): look again
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"no {what} after {timeout:.0f} s")
        time.sleep(0.1)


def shoot(d, folder: str, name: str) -> None:
    """A screenshot of the whole page (the window made as tall as the page)."""
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(1300, min(4000, max(1100, height)))
    d.save_screenshot(os.path.join(folder, f"{name}.png"))
    d.set_window_size(1300, 1100)


def overlay_sum(d) -> int:
    """The sum of the overlay canvas's alpha channel (0: nothing drawn)."""
    return d.execute_script("""
        const c = document.getElementById('overlay');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = 0; for (let i = 3; i < px.length; i += 4) s += px[i]; return s;""")


def toggle(d, box: str, on: bool) -> None:
    """Click the checkbox ``box`` until it is ``on`` (a click during a redraw of the page may be lost)."""
    from selenium.webdriver.common.by import By

    def done() -> bool:
        el = d.find_element(By.ID, box)
        if el.is_selected() != on:
            el.click()
        return el.is_selected() == on

    wait(f"{box} {'on' if on else 'off'}", done, 10)


def test_review_in_a_real_browser(served, browser, shots):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    site, alert, base = served
    d = browser
    a = alert["id"]

    # log in (the page asked for first sends us to the login page, then back to it)
    d.get(f"{base}/")
    wait("login page", lambda: "/login" in d.current_url)
    shoot(d, shots, "1-login")
    d.find_element(By.NAME, "username").send_keys("rev")
    d.find_element(By.NAME, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    wait("queue", lambda: d.current_url.rstrip("/") == base and d.find_elements(By.CSS_SELECTOR, "table.alerts"))

    # the queue: the real alert is listed, unreviewed first (it is the newest)
    first = d.find_element(By.CSS_SELECTOR, "table.alerts tbody tr td a")
    assert first.text == f"#{a}"
    shoot(d, shots, "2-queue")
    # live: an alert raised while the queue is open appears without a reload
    marker = d.execute_script("document.body.dataset.marker = 'same page'; return 1")
    new = site.db.alert_started(uid=str(uuid.uuid4()), camera="B", started_at=datetime.now(timezone.utc),
                                start_time=0.0, score=0.81, class_name="fight", class_index=1, checkpoint_id="x",
                                xvad_version="0.1.0", threshold=0.5, policy="1/1", window=16, stride=2, fps=FPS,
                                media_dir=None, host="test", pid=1)
    wait("the new alert in the queue", lambda: d.find_elements(By.CSS_SELECTOR, f"a[href='/alerts/{new}']"), 30)
    assert marker and d.execute_script("return document.body.dataset.marker") == "same page"

    def open_alert() -> bool:
        try:                                       # the table may be replaced by its next update meanwhile
            d.find_element(By.CSS_SELECTOR, f"a[href='/alerts/{a}']").click()
            return True
        except StaleElementReferenceException:
            return False

    # the alert page: the clip plays, the overlay draws the Grad-CAM map in step with it
    wait("a click on the alert", open_alert)
    wait("alert page", lambda: d.current_url.endswith(f"/alerts/{a}"))
    wait("explanation loaded", lambda: d.execute_script("return document.getElementById('overlay').dataset.ready"))
    wait("clip metadata", lambda: d.execute_script("return document.getElementById('clip').readyState >= 1"))
    d.execute_script("const v = document.getElementById('clip'); v.muted = true; v.play();")
    wait("playback", lambda: d.execute_script("return document.getElementById('clip').currentTime > 0.5"), 60)
    d.execute_script("document.getElementById('clip').pause()")
    data = json.loads(d.execute_script(f"return fetch('/api/alerts/{a}/explanation.json').then(r => r.text())"))
    peak = max(range(len(data["frames"])), key=lambda i: data["frames"][i]["importance"])  # counted most
    d.execute_script(f"document.getElementById('clip').currentTime = {data['frames'][peak]['t']};")
    # the seek has landed there and the map is drawn (the sprite sheet may load after the page is ready)
    wait("the map at the peak", lambda: d.execute_script(
        "const c = document.getElementById('overlay'), v = document.getElementById('clip');"
        f"return !v.seeking && c.dataset.frame === '{peak}' && c.dataset.map === '1'"))
    wait("sprite drawn", lambda: overlay_sum(d) > 0)
    # the square the model saw of that frame is outlined where the explanation puts it
    drawn = [float(v) for v in d.execute_script("return document.getElementById('overlay').dataset.box").split(",")]
    assert drawn == pytest.approx(data["frames"][peak]["box"], abs=1e-6)
    shoot(d, shots, "3-alert")
    toggle(d, "show-box", False)
    wait("the square gone", lambda: d.execute_script("return document.getElementById('overlay').dataset.box") == "")
    with_map = overlay_sum(d)
    toggle(d, "show-map", False)                                   # heatmap off: only the contours are left
    without_map = wait("the map gone", lambda: (n := overlay_sum(d)) < with_map * 0.9 and n + 1) - 1
    toggle(d, "show-contours", False)                              # contours off too: nothing drawn
    wait("an empty overlay", lambda: overlay_sum(d) == 0)
    toggle(d, "show-map", True)
    wait("the map back", lambda: overlay_sum(d) > without_map)
    toggle(d, "show-contours", True)
    toggle(d, "show-box", True)
    # the importance strip seeks: a click at its middle moves the clip to a frame near the middle
    strip = d.find_element(By.ID, "strip")
    d.execute_script("arguments[0].scrollIntoView()", strip)
    from selenium.webdriver.common.action_chains import ActionChains
    ActionChains(d).move_to_element_with_offset(strip, 0, 0).click().perform()      # the centre of the strip
    middle = data["clip"]["duration"] / 2
    times = [f["t"] for f in data["frames"]]
    expected = min(times, key=lambda t: abs(t - middle))
    wait("seek from the strip", lambda: abs(d.execute_script("return document.getElementById('clip').currentTime")
                                            - expected) < 0.6)

    # the verdict, with its reason
    d.find_element(By.CSS_SELECTOR, "input[name='verdict'][value='confirmed']").click()
    d.find_element(By.NAME, "reason").send_keys("two men fighting by the door, seen on the clip")
    d.find_element(By.CSS_SELECTOR, "form.verdict button").click()
    wait("verdict in the history", lambda: "two men fighting by the door" in d.find_element(By.ID, "verdicts").text)
    assert "confirmed" in d.find_element(By.CSS_SELECTOR, "h1 .badge").text
    shoot(d, shots, "4-alert-decided")

    # the export: the browser downloads the ZIP
    d.find_element(By.LINK_TEXT, "Export the record (ZIP)").click()
    path = os.path.join(d.downloads, f"xvad-alert-{a}.zip")
    wait("the downloaded ZIP", lambda: os.path.exists(path) and os.path.getsize(path) > 0, 60)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["alert.json", "audit.jsonl", "report.html", "verdicts.json"]
        assert json.loads(z.read("alert.json"))["checkpoint_id"] == alert["checkpoint_id"]
        assert json.loads(z.read("verdicts.json"))[-1]["reason"] == "two men fighting by the door, seen on the clip"
        actions = [json.loads(x)["action"] for x in z.read("audit.jsonl").decode().splitlines()]
        assert "alert.decided" in actions and actions[-1] == "alert.exported"
        assert b"<html" in z.read("report.html")[:2000].lower()

    # the cameras page
    d.get(f"{base}/cameras")
    wait("cameras", lambda: d.find_elements(By.CSS_SELECTOR, "table.cameras"))
    shoot(d, shots, "5-cameras")

    # the audit log (admin): log out, log in as admin, find the verdict
    d.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait("login page", lambda: "/login" in d.current_url)
    d.get(f"{base}/login?next=/audit")
    d.find_element(By.NAME, "username").send_keys("admin")
    d.find_element(By.NAME, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    wait("audit page", lambda: d.current_url.endswith("/audit") and d.find_elements(By.ID, "verify"))
    assert "intact" in d.find_element(By.ID, "verify").text
    rows = d.find_elements(By.CSS_SELECTOR, "table.audit tr")
    decided = [r.text for r in rows if "alert.decided" in r.text]
    assert decided and "rev" in decided[0] and f"alert:{a}" in decided[0]
    assert "two men fighting by the door" in decided[0]
    shoot(d, shots, "6-audit")
    d.get(f"{base}/users")
    wait("users", lambda: d.find_elements(By.CSS_SELECTOR, "table.users"))
    shoot(d, shots, "7-users")
    for name in ("1-login", "2-queue", "3-alert", "4-alert-decided", "5-cameras", "6-audit", "7-users"):
        assert os.path.getsize(os.path.join(shots, f"{name}.png")) > 10_000, name
