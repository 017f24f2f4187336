--- luarun.trace_html: the page written by `luarun --trace out.html`.
-- core/trace.c calls this module's function with the trace as Chrome trace-event
-- JSON and writes the string it returns. The page is self-contained (inline CSS and
-- JS, no network): a waterfall with one row per task and one bar per span, so
-- sequential and concurrent code look different at a glance. The JSON is embedded
-- as it is: trace.c escapes <, > and & in it, so it cannot end the <script> element.

local PAGE = [==[
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>luarun trace</title>
<style>
  body { margin: 0; font: 13px/1.4 system-ui, sans-serif; color: #222; background: #fff; }
  header { padding: 10px 14px; border-bottom: 1px solid #ddd; }
  h1 { font-size: 16px; margin: 0 0 4px 0; }
  #summary { color: #444; white-space: pre-line; }
  #legend span { display: inline-block; margin-right: 14px; }
  #legend i { display: inline-block; width: 12px; height: 12px; vertical-align: -2px;
              margin-right: 4px; border-radius: 2px; }
  #controls { margin-top: 6px; }
  #view { position: relative; height: calc(100vh - 170px); min-height: 200px; }
  #c { position: absolute; top: 0; left: 0; display: block; }
  #wrap { position: absolute; top: 0; left: 0; right: 0; bottom: 0; overflow: auto; }
  #spacer { width: 1px; height: 1px; }
  #tip { position: fixed; pointer-events: none; background: #fffff0; border: 1px solid #999;
         padding: 6px 8px; font: 12px/1.35 ui-monospace, monospace; white-space: pre;
         display: none; max-width: 70vw; overflow: hidden; box-shadow: 0 2px 6px #0003; }
</style>
</head>
<body>
<header>
  <h1>luarun trace</h1>
  <div id="summary"></div>
  <div id="legend"></div>
  <div id="controls"><label>zoom <input id="zoom" type="range" min="0" max="8" step="0.1"
    value="0"></label> <span id="zoomv">1x</span></div>
</header>
<div id="view"><canvas id="c"></canvas><div id="wrap"><div id="spacer"></div></div></div>
<div id="tip"></div>
<script id="trace-data" type="application/json">
@@TRACE@@
</script>
<script>
"use strict";
(function () {
  var data = JSON.parse(document.getElementById("trace-data").textContent);
  var COLORS = { run: "#3b3b3b", sleep: "#4a90d9", http: "#2e9d5b", pool: "#e08a1e",
                 fs: "#8e5cc4", wait: "#bdbdbd", task: "#e9eef5" };
  var LABELS = { run: "running (CPU on the loop)", sleep: "lr.sleep", http: "HTTP request",
                 pool: "run_in_pool job", fs: "file call", wait: "other wait", task: "task alive" };
  var ROW = 20, AXIS = 24, LABELW = 280;
  var names = {}, rows = {}, list = [], t0 = Infinity, t1 = -Infinity;
  data.traceEvents.forEach(function (e) {
    if (e.ph === "M" && e.name === "thread_name") names[e.tid] = e.args.name;
    if (e.ph !== "X") return;
    var r = rows[e.tid] || (rows[e.tid] = { tid: e.tid, life: null, spans: [] });
    if (e.cat === "task") r.life = e; else r.spans.push(e);
    t0 = Math.min(t0, e.ts);
    t1 = Math.max(t1, e.ts + e.dur);
  });
  Object.keys(rows).forEach(function (k) { list.push(rows[k]); });
  list.sort(function (a, b) {
    return ((a.life ? a.life.ts : 0) - (b.life ? b.life.ts : 0)) || (a.tid - b.tid);
  });
  // Runs first, so that waits and requests are drawn over them.
  list.forEach(function (r) {
    r.spans.sort(function (a, b) { return (a.cat === "run" ? 0 : 1) - (b.cat === "run" ? 0 : 1); });
  });
  if (!isFinite(t0)) { t0 = 0; t1 = 1; }
  var total = Math.max(t1 - t0, 1);

  function ms(us) {
    return us >= 1e6 ? (us / 1e6).toFixed(3) + " s" : (us / 1e3).toFixed(us < 1e4 ? 3 : 1) + " ms";
  }

  // Summary: per kind, the count, the summed time and the time covered by at least
  // one span: their ratio is how much of that kind of work overlapped.
  (function () {
    var kinds = {}, lines = [];
    list.forEach(function (r) {
      r.spans.forEach(function (e) {
        (kinds[e.cat] = kinds[e.cat] || []).push([e.ts, e.ts + e.dur]);
      });
    });
    lines.push(list.length + " task" + (list.length === 1 ? "" : "s") + ", " + ms(total) + " from the first event to the last");
    ["http", "sleep", "pool", "fs", "run"].forEach(function (k) {
      var iv = kinds[k];
      if (!iv) return;
      var sum = 0, covered = 0, end = -Infinity;
      iv.sort(function (a, b) { return a[0] - b[0]; });
      iv.forEach(function (p) {
        sum += p[1] - p[0];
        if (p[1] > end) { covered += p[1] - Math.max(p[0], end); end = p[1]; }
      });
      lines.push(LABELS[k] + ": " + iv.length + ", " + ms(sum) + " in all, over " + ms(covered) +
                 " of wall time" + (covered > 0 ? " (" + (sum / covered).toFixed(1) + "x at once on average)" : ""));
    });
    document.getElementById("summary").textContent = lines.join("\n");
    var lg = document.getElementById("legend");
    Object.keys(COLORS).forEach(function (k) {
      var s = document.createElement("span"), i = document.createElement("i");
      i.style.background = COLORS[k];
      s.appendChild(i);
      s.appendChild(document.createTextNode(LABELS[k]));
      lg.appendChild(s);
    });
  })();

  var wrap = document.getElementById("wrap"), canvas = document.getElementById("c");
  var spacer = document.getElementById("spacer"), tip = document.getElementById("tip");
  var ctx = canvas.getContext("2d"), zoom = 1;

  function timelineWidth() { return Math.max(100, (wrap.clientWidth - LABELW - 20) * zoom); }
  function xOf(ts) { return LABELW + (ts - t0) / total * timelineWidth() - wrap.scrollLeft; }

  function tickStep(pxPerUs) {
    var target = 110 / pxPerUs, p = Math.pow(10, Math.floor(Math.log10(target)));
    var steps = [1, 2, 5, 10], i;
    for (i = 0; i < steps.length; i++) if (steps[i] * p >= target) return steps[i] * p;
    return 10 * p;
  }

  function draw() {
    var w = wrap.clientWidth, h = wrap.clientHeight, dpr = window.devicePixelRatio || 1;
    spacer.style.width = (LABELW + timelineWidth() + 20) + "px";
    spacer.style.height = (AXIS + list.length * ROW + 10) + "px";
    canvas.width = w * dpr; canvas.height = h * dpr;
    canvas.style.width = w + "px"; canvas.style.height = h + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var first = Math.max(0, Math.floor(wrap.scrollTop / ROW));
    var last = Math.min(list.length, first + Math.ceil(h / ROW) + 1);
    var y0 = AXIS - (wrap.scrollTop - first * ROW);
    ctx.save();
    ctx.beginPath(); ctx.rect(LABELW, AXIS, w - LABELW, h - AXIS); ctx.clip();
    for (var i = first; i < last; i++) {
      var r = list[i], y = y0 + (i - first) * ROW;
      if (i % 2) { ctx.fillStyle = "#fafafa"; ctx.fillRect(LABELW, y, w, ROW); }
      if (r.life) bar(r.life, y + 2, ROW - 4, COLORS.task);
      r.spans.forEach(function (e) {
        if (e.cat === "run") bar(e, y + 4, ROW - 8, COLORS.run);
        else bar(e, y + 5, ROW - 10, COLORS[e.cat] || COLORS.wait);
      });
    }
    ctx.restore();
    // Labels.
    ctx.fillStyle = "#fff"; ctx.fillRect(0, AXIS, LABELW, h);
    ctx.font = "12px system-ui, sans-serif"; ctx.textBaseline = "middle";
    for (i = first; i < last; i++) {
      y = y0 + (i - first) * ROW;
      if (y < AXIS - ROW / 2) continue;
      ctx.fillStyle = "#222";
      var label = names[list[i].tid] || ("task " + list[i].tid);
      while (label.length > 3 && ctx.measureText(label).width > LABELW - 12) label = label.slice(0, -2);
      ctx.fillText(label, 6, y + ROW / 2);
    }
    ctx.strokeStyle = "#ccc"; ctx.beginPath(); ctx.moveTo(LABELW - 0.5, 0); ctx.lineTo(LABELW - 0.5, h); ctx.stroke();
    // Time axis.
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, AXIS);
    ctx.strokeStyle = "#ccc"; ctx.beginPath(); ctx.moveTo(0, AXIS - 0.5); ctx.lineTo(w, AXIS - 0.5); ctx.stroke();
    var pxPerUs = timelineWidth() / total, step = tickStep(pxPerUs);
    ctx.fillStyle = "#555"; ctx.textBaseline = "alphabetic";
    for (var t = 0; t <= total + step; t += step) {
      var x = xOf(t0 + t);
      if (x < LABELW || x > w) continue;
      ctx.fillRect(x, AXIS - 6, 1, 6);
      ctx.fillText(ms(t), x + 3, AXIS - 8);
    }
  }

  function bar(e, y, hgt, color) {
    var x = xOf(e.ts), x2 = xOf(e.ts + e.dur);
    if (x2 < LABELW || x > wrap.clientWidth) return;
    ctx.fillStyle = color;
    ctx.fillRect(x, y, Math.max(1, x2 - x), hgt);
  }

  function describe(e) {
    var s = e.name + "\n" + (LABELS[e.cat] || e.cat) + "\nstart " + ms(e.ts - t0) +
            ", duration " + ms(e.dur);
    Object.keys(e.args || {}).forEach(function (k) { s += "\n" + k + ": " + e.args[k]; });
    return s;
  }

  wrap.addEventListener("scroll", draw);
  window.addEventListener("resize", draw);
  document.getElementById("zoom").addEventListener("input", function (ev) {
    var center = (wrap.scrollLeft + (wrap.clientWidth - LABELW) / 2) / timelineWidth();
    zoom = Math.pow(2, +ev.target.value);
    document.getElementById("zoomv").textContent = zoom.toFixed(1) + "x";
    draw();
    wrap.scrollLeft = center * timelineWidth() - (wrap.clientWidth - LABELW) / 2;
    draw();
  });
  wrap.addEventListener("mousemove", function (ev) {
    var rect = wrap.getBoundingClientRect(), mx = ev.clientX - rect.left, my = ev.clientY - rect.top;
    var i = Math.floor((my - AXIS + wrap.scrollTop) / ROW), text = null;
    if (my > AXIS && i >= 0 && i < list.length) {
      var r = list[i];
      if (mx < LABELW) {
        text = names[r.tid] || ("task " + r.tid);
        if (r.life) text = describe(r.life);
      } else {
        var best = null, slack = 3 / (timelineWidth() / total);
        var ts = t0 + (mx - LABELW + wrap.scrollLeft) / timelineWidth() * total;
        r.spans.forEach(function (e) {
          if (ts >= e.ts - slack && ts <= e.ts + e.dur + slack &&
              (!best || best.cat === "run" || e.dur < best.dur)) best = e;
        });
        if (!best && r.life && ts >= r.life.ts && ts <= r.life.ts + r.life.dur) best = r.life;
        if (best) text = describe(best);
      }
    }
    if (text) {
      tip.textContent = text;
      tip.style.display = "block";
      tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8) + "px";
      tip.style.top = Math.min(ev.clientY + 14, window.innerHeight - tip.offsetHeight - 8) + "px";
    } else {
      tip.style.display = "none";
    }
  });
  wrap.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  draw();
})();
</script>
</body>
</html>
]==]

--- Returns the page for the trace-event JSON text `json`.
-- @param json string: the trace, with <, > and & escaped as \u003c and so on
-- @return string: the HTML page
return function(json)
  local before, after = PAGE:match("^(.-)@@TRACE@@(.*)$")
  return before .. json .. after
end
