// The alert page's overlay: the Grad-CAM map of the frame nearest the video's current time, drawn from
// the sprite sheet (maps.png) on a canvas over the video, with its contours; the frame-importance
// strip under it (click to seek) and the key frames (click to seek).
"use strict";
(function () {
  const video = document.getElementById("clip");
  const canvas = document.getElementById("overlay");
  if (!video || !canvas || !canvas.dataset.explanation) return;
  const strip = document.getElementById("strip");
  const showMap = document.getElementById("show-map");
  const showContours = document.getElementById("show-contours");
  const showBox = document.getElementById("show-box");
  const opacity = document.getElementById("opacity");
  const info = document.getElementById("frame-info");
  const sprite = new Image();
  let data = null;

  // the index of the frame whose time is nearest t (frames are in time order)
  function nearest(t) {
    const frames = data.frames;
    let lo = 0, hi = frames.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (frames[mid].t < t) lo = mid + 1; else hi = mid;
    }
    if (lo > 0 && Math.abs(frames[lo - 1].t - t) <= Math.abs(frames[lo].t - t)) lo -= 1;
    return lo;
  }

  function fit() {
    const w = Math.round(video.clientWidth), h = Math.round(video.clientHeight);
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    if (strip && strip.width !== w) strip.width = w;
  }

  // a map is shown only within half a model frame of an explained frame's time
  function near(i) {
    return Math.abs(data.frames[i].t - video.currentTime) <= 0.5 / (data.model_fps || 8) + 1e-3;
  }

  function drawOverlay(i) {
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const f = data.frames[i];
    if (!near(i)) {
      if (info) info.textContent = "no map here: this part of the clip was not explained";
      canvas.dataset.frame = "";
      canvas.dataset.map = "";
      return;
    }
    const s = data.sprite;
    const withMap = showMap.checked && sprite.complete && sprite.naturalWidth > 0;
    canvas.dataset.map = withMap ? "1" : "";   // whether this frame's map is drawn (the sheet may still load)
    if (withMap) {
      const sx = (f.tile % s.columns) * s.tile_width, sy = Math.floor(f.tile / s.columns) * s.tile_height;
      ctx.globalAlpha = Number(opacity.value) / 100;
      ctx.drawImage(sprite, sx, sy, s.tile_width, s.tile_height, 0, 0, canvas.width, canvas.height);
      ctx.globalAlpha = 1;
    }
    if (showContours.checked) {
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 2;
      for (const line of f.contours || []) {
        if (line.length < 2) continue;
        ctx.beginPath();
        line.forEach(([x, y], k) => (k ? ctx.lineTo : ctx.moveTo).call(ctx, x * canvas.width, y * canvas.height));
        ctx.closePath();
        ctx.stroke();
      }
    }
    // the square the model saw of this frame (its crop; with the motion crop, the frame's own square)
    const box = f.box && showBox && showBox.checked ? f.box : null;
    if (box) {
      ctx.strokeStyle = "#ffe040";
      ctx.lineWidth = 1.5;
      ctx.setLineDash([6, 4]);
      ctx.strokeRect(box[0] * canvas.width, box[1] * canvas.height,
                     (box[2] - box[0]) * canvas.width, (box[3] - box[1]) * canvas.height);
      ctx.setLineDash([]);
    }
    canvas.dataset.box = box ? box.join(",") : "";
    if (info) info.textContent = `frame at ${f.t.toFixed(2)} s, importance ${f.importance.toFixed(2)}`;
    canvas.dataset.frame = String(i);
  }

  function duration() {
    return (data.clip && data.clip.duration) || video.duration || 1;
  }

  function drawStrip(i) {
    if (!strip) return;
    const ctx = strip.getContext("2d");
    const w = strip.width, h = strip.height, d = duration();
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#eef0f3";
    ctx.fillRect(0, 0, w, h);
    const bar = Math.max(1, w / Math.max(1, data.frames.length));
    data.frames.forEach((f, k) => {
      ctx.fillStyle = k === i ? "#c0392b" : "#e67e22";
      const bh = Math.max(1, f.importance * (h - 4));
      ctx.fillRect((f.t / d) * w, h - bh, bar, bh);
    });
    ctx.fillStyle = "#1f2d3d";
    ctx.fillRect(Math.min(w - 2, (video.currentTime / d) * w), 0, 2, h);
  }

  function draw() {
    if (!data || !data.frames.length) return;
    fit();
    const i = nearest(video.currentTime);
    drawOverlay(i);
    drawStrip(i);
  }

  function loop() {
    draw();
    if (!video.paused && !video.ended) requestAnimationFrame(loop);
  }

  function seek(t) {
    video.currentTime = Math.max(0, Math.min(t, (video.duration || t)));
    draw();
  }

  fetch(canvas.dataset.explanation, {credentials: "same-origin"})
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`explanation: HTTP ${r.status}`))))
    .then((d) => {
      data = d;
      sprite.onload = draw;
      sprite.src = canvas.dataset.maps;
      draw();
      canvas.dataset.ready = "1";
    })
    .catch((e) => { if (info) info.textContent = `the explanation could not be loaded (${e.message})`; });

  video.addEventListener("play", loop);
  for (const ev of ["seeked", "timeupdate", "loadedmetadata", "pause"]) video.addEventListener(ev, draw);
  window.addEventListener("resize", draw);
  for (const el of [showMap, showContours, showBox, opacity]) {
    el.addEventListener("input", draw);
    el.addEventListener("change", draw);
  }
  if (strip) {
    strip.addEventListener("click", (e) => {
      if (!data) return;
      const x = (e.clientX - strip.getBoundingClientRect().left) / strip.clientWidth;
      const f = data.frames[nearest(x * duration())];
      seek(f.t);
    });
  }
  for (const img of document.querySelectorAll(".keys img[data-t]")) {
    img.addEventListener("click", () => seek(Number(img.dataset.t)));
  }
})();
