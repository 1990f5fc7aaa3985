// The queue updates itself: every few seconds it fetches the counts and the table as they are now.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live) return;
  const url = live.dataset.poll;
  let last = live.innerHTML;
  async function poll() {
    try {
      const r = await fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}});
      if (r.redirected || r.status === 401) {
        window.location.reload();          // the session ended: the page itself goes to the login
      } else if (r.ok) {
        const html = await r.text();
        if (html !== last) { live.innerHTML = html; last = html; live.dataset.updated = String(Date.now()); }
      }
    } catch (e) { /* the service is restarting: try again next time */ }
  }
  setInterval(poll, 5000);
})();
