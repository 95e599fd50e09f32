// Errand's log viewer: one self-contained component for the element
// .logview[data-src]. It streams the log over Server-Sent Events (one
// event per line, id = the line's offset; the browser resumes with
// Last-Event-ID) and falls back to polling pages by offset. ANSI SGR
// colours and carriage returns are interpreted by a parser that keeps its
// state from line to line and across an escape cut at a line's end. Only
// the visible rows are in the DOM, so a log of hundreds of thousands of
// lines scrolls smoothly. Every line is inserted as text, never as HTML.
(function () {
  "use strict";

  var LH = 18;          // px per row, as in app.css .lv-line
  var OVERSCAN = 30;    // rows rendered above and below the viewport
  var TAIL = 10000;     // lines loaded first: the end of the log
  var PAGE = 10000;     // lines per page request (the API's maximum)
  var EARLIER = 50000;  // lines one "load earlier" adds

  // ---- ANSI parser ------------------------------------------------------

  function Style() { this.fg = null; this.bg = null; this.b = false; this.d = false; this.i = false; this.u = false; this.s = false; this.inv = false; }
  Style.prototype.clone = function () { var c = new Style(); for (var k in this) if (Object.prototype.hasOwnProperty.call(this, k)) c[k] = this[k]; return c; };

  function color256(n) {
    if (n < 16) return n;
    if (n < 232) { n -= 16; var v = [0, 95, 135, 175, 215, 255]; return rgb(v[Math.floor(n / 36)], v[Math.floor(n / 6) % 6], v[n % 6]); }
    var g = 8 + (n - 232) * 10; return rgb(g, g, g);
  }
  function rgb(r, g, b) { return "#" + [r, g, b].map(function (x) { x = Math.max(0, Math.min(255, x | 0)); return (x < 16 ? "0" : "") + x.toString(16); }).join(""); }

  function sgr(st, params) {
    var p = params.length ? params : [0];
    for (var i = 0; i < p.length; i++) {
      var c = p[i];
      if (c === 0) { var n = new Style(); for (var k in n) st[k] = n[k]; }
      else if (c === 1) st.b = true; else if (c === 2) st.d = true; else if (c === 3) st.i = true;
      else if (c === 4) st.u = true; else if (c === 7) st.inv = true; else if (c === 9) st.s = true;
      else if (c === 22) { st.b = false; st.d = false; } else if (c === 23) st.i = false; else if (c === 24) st.u = false;
      else if (c === 27) st.inv = false; else if (c === 29) st.s = false;
      else if (c >= 30 && c <= 37) st.fg = c - 30; else if (c === 39) st.fg = null;
      else if (c >= 40 && c <= 47) st.bg = c - 40; else if (c === 49) st.bg = null;
      else if (c >= 90 && c <= 97) st.fg = c - 90 + 8; else if (c >= 100 && c <= 107) st.bg = c - 100 + 8;
      else if (c === 38 || c === 48) {
        var col = null;
        if (p[i + 1] === 5 && i + 2 < p.length) { col = color256(p[i + 2]); i += 2; }
        else if (p[i + 1] === 2 && i + 4 < p.length) { col = rgb(p[i + 2], p[i + 3], p[i + 4]); i += 4; }
        else { i = p.length; }
        if (c === 38) st.fg = col; else st.bg = col;
      }
    }
  }

  // Parser turns lines into styled segments. Its style carries from one
  // line to the next, as a terminal's does; an escape sequence left
  // unfinished at the end of a chunk is kept and completed by the next.
  // Style objects are never changed once made: segments share them.
  function Parser() { this.st = new Style(); this.pending = ""; }

  var SPECIAL = /[\x00-\x08\x0b-\x1f\x7f]/;

  // line returns {segs: [{t, st}], plain} for one line of text.
  Parser.prototype.line = function (text) {
    if (this.pending) { text = this.pending + text; this.pending = ""; }
    if (!SPECIAL.test(text)) return { segs: text ? [{ t: text, st: this.st }] : [], plain: text };
    var cells = null, segs = [], cur = "", col = 0;
    var self = this;
    function flush() { if (cur) { segs.push({ t: cur, st: self.st }); cur = ""; } }
    function toCells() { // per-character cells once \r, \b or an erase is met
      if (cells) return;
      flush(); cells = [];
      segs.forEach(function (s) { for (var j = 0; j < s.t.length; j++) cells.push([s.t[j], s.st]); });
      segs = [];
    }
    function put(ch) {
      if (cells) { if (col < cells.length) cells[col] = [ch, self.st]; else cells.push([ch, self.st]); col++; return; }
      cur += ch; col++;
    }
    for (var i = 0; i < text.length; i++) {
      var ch = text[i];
      if (ch === "\x1b") {
        var rest = text.slice(i, i + 256);
        var m = /^\x1b\[([0-9;:?]*)([ -\/]*)([@-~])/.exec(rest);
        if (m) {
          i += m[0].length - 1;
          if (m[3] === "m" && m[1].indexOf("?") < 0) {
            if (!cells) flush();
            var next = this.st.clone();
            sgr(next, m[1] === "" ? [] : m[1].split(/[;:]/).map(function (x) { return x === "" ? 0 : parseInt(x, 10); }));
            this.st = next;
          } else if (m[3] === "K") {
            toCells();
            var mode = m[1] === "" ? 0 : parseInt(m[1], 10);
            if (mode === 0) cells.length = Math.min(cells.length, col); else if (mode === 2) cells = [];
          } else if (m[3] === "G") { toCells(); col = Math.max(0, (parseInt(m[1] || "1", 10) || 1) - 1); }
          continue;
        }
        var osc = /^\x1b\][^\x07\x1b]*(\x07|\x1b\\)/.exec(rest);
        if (osc) { i += osc[0].length - 1; continue; }
        if (i + 256 >= text.length && /^\x1b(\[[0-9;:?]*[ -\/]*|\][^\x07\x1b]*)?$/.test(rest)) {
          this.pending = rest; break; // cut at the chunk's end: finished by the next
        }
        if (/^\x1b[@-Z\\-_]/.test(rest)) { i += 1; continue; } // two-byte escapes
        continue;
      }
      if (ch === "\r") { toCells(); col = 0; continue; }
      if (ch === "\b") { if (col > 0) { toCells(); col--; } continue; }
      if (ch < " " && ch !== "\t" || ch === "\x7f") { put("\ufffd"); continue; }
      put(ch);
    }
    if (cells) {
      segs = [];
      var last = null;
      cells.forEach(function (c) {
        if (c[1] === last) segs[segs.length - 1].t += c[0]; else { segs.push({ t: c[0], st: c[1] }); last = c[1]; }
      });
    } else flush();
    var plain = "";
    for (var s = 0; s < segs.length; s++) plain += segs[s].t;
    return { segs: segs, plain: plain };
  };

  function applyStyle(span, st) {
    var fg = st.fg, bg = st.bg, cls = [];
    if (st.inv) { var t = fg; fg = bg === null ? 0 : bg; bg = t === null ? 7 : t; }
    if (typeof fg === "number") cls.push("f" + (st.b && fg < 8 ? fg + 8 : fg)); else if (fg) span.style.color = fg;
    if (typeof bg === "number") cls.push("b" + bg); else if (bg) span.style.backgroundColor = bg;
    if (st.b) cls.push("a-b"); if (st.d) cls.push("a-d"); if (st.i) cls.push("a-i"); if (st.u) cls.push("a-u"); if (st.s) cls.push("a-s");
    if (cls.length) span.className = cls.join(" ");
  }

  // ---- the viewer -------------------------------------------------------

  function Viewer(root) {
    this.root = root;
    this.src = root.getAttribute("data-src");
    this.known = parseInt(root.getAttribute("data-lines") || "0", 10) || 0;
    this.scroll = root.querySelector(".lv-scroll");
    this.spacer = root.querySelector(".lv-spacer");
    this.rowsEl = root.querySelector(".lv-rows");
    this.statusEl = root.querySelector(".lv-status");
    this.jumpEl = root.querySelector(".lv-jump");
    this.earlierEl = root.querySelector(".lv-earlier");
    this.searchEl = root.querySelector(".lv-search");
    this.matchesEl = root.querySelector(".lv-matches");
    this.raw = [];      // the loaded lines as sent
    this.lines = [];    // their parsed form
    this.base = 0;      // offset of raw[0]
    this.parser = new Parser();
    this.follow = true;
    this.fresh = 0;     // lines come while not following
    this.complete = false;
    this.mode = "";
    this.sel = null;    // [from, to] offsets selected by #L
    this.matches = []; this.matchAt = -1; this.query = "";
    this.pendingHash = null;
    this.queued = false;
    this.bind();
    var h = this.parseHash();
    var start = Math.max(0, this.known - TAIL);
    if (h && h[0] < start) start = Math.max(0, h[0] - 100);
    if (h) { this.follow = false; this.sel = h; this.pendingHash = h; }
    this.base = start;
    this.stream(start);
    this.draw();
  }

  Viewer.prototype.bind = function () {
    var v = this;
    this.scroll.addEventListener("scroll", function () {
      var atBottom = v.scroll.scrollTop + v.scroll.clientHeight >= v.scroll.scrollHeight - 2 * LH;
      v.follow = atBottom;
      if (atBottom) { v.fresh = 0; v.jumpEl.hidden = true; }
      v.schedule();
    }, { passive: true });
    window.addEventListener("resize", function () { v.schedule(); });
    this.jumpEl.addEventListener("click", function () { v.follow = true; v.fresh = 0; v.jumpEl.hidden = true; v.toBottom(); });
    this.earlierEl.addEventListener("click", function () { v.loadEarlier(EARLIER); });
    this.rowsEl.addEventListener("click", function (e) {
      var a = e.target.closest && e.target.closest("a[data-n]");
      if (!a) return;
      e.preventDefault();
      var n = parseInt(a.getAttribute("data-n"), 10);
      var sel = e.shiftKey && v.sel ? [Math.min(v.sel[0], n), Math.max(v.sel[0], n)] : [n, n];
      v.sel = sel;
      var hash = "#L" + (sel[0] + 1) + (sel[1] !== sel[0] ? "-" + (sel[1] + 1) : "");
      history.replaceState(null, "", hash);
      v.draw();
    });
    window.addEventListener("hashchange", function () {
      var h = v.parseHash();
      if (h) { v.sel = h; v.pendingHash = h; v.follow = false; v.reveal(); }
    });
    this.searchEl.addEventListener("keydown", function (e) {
      if (e.key === "Enter") { e.preventDefault(); v.search(v.searchEl.value, e.shiftKey ? -1 : 1); }
      if (e.key === "Escape") { v.searchEl.value = ""; v.search("", 0); v.scroll.focus(); }
    });
    this.searchEl.addEventListener("input", function () {
      clearTimeout(v.searchTimer);
      v.searchTimer = setTimeout(function () { v.search(v.searchEl.value, 0); }, 150);
    });
    document.addEventListener("keydown", function (e) {
      var t = e.target;
      if (e.key === "/" && !(t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA"))) { e.preventDefault(); v.searchEl.focus(); }
    });
  };

  Viewer.prototype.parseHash = function () {
    var m = /^#L(\d+)(?:-L?(\d+))?$/.exec(location.hash);
    if (!m) return null;
    var a = Math.max(1, parseInt(m[1], 10)) - 1, b = m[2] ? Math.max(1, parseInt(m[2], 10)) - 1 : a;
    return [Math.min(a, b), Math.max(a, b)];
  };

  Viewer.prototype.setStatus = function (s) { this.statusEl.textContent = s; };

  Viewer.prototype.updateStatus = function () {
    var n = this.raw.length, from = this.base + 1, to = this.base + n;
    var what = n ? "lines " + from + "–" + to : "no lines";
    if (this.complete) what += this.base === 0 ? " · complete" : " of " + to + " · complete";
    else what += " · " + this.mode;
    this.setStatus(what);
    this.earlierEl.hidden = this.base === 0;
    if (this.base > 0) this.earlierEl.textContent = "Load earlier (" + this.base + " more)";
  };

  // append adds lines that begin at offset.
  Viewer.prototype.append = function (offset, lines) {
    var expect = this.base + this.raw.length;
    if (offset + lines.length <= expect) return;       // already have them
    if (offset < expect) { lines = lines.slice(expect - offset); offset = expect; }
    if (offset > expect) return;                       // a gap: ignored, the stream resends
    for (var i = 0; i < lines.length; i++) { this.raw.push(lines[i]); this.lines.push(this.parser.line(lines[i])); }
    // Lines the page did not know of when it loaded are new; the rest
    // is catching up.
    if (!this.follow) this.fresh += Math.max(0, offset + lines.length - Math.max(offset, this.known));
    this.schedule();
  };

  Viewer.prototype.schedule = function () {
    if (this.queued) return;
    this.queued = true;
    var v = this;
    requestAnimationFrame(function () { v.queued = false; v.draw(); });
  };

  Viewer.prototype.toBottom = function () {
    this.spacer.style.height = (this.raw.length * LH) + "px";
    this.scroll.scrollTop = this.scroll.scrollHeight;
    this.draw();
  };

  // reveal scrolls to the selected line once it is loaded, loading
  // earlier lines when it lies before them.
  Viewer.prototype.reveal = function () {
    var h = this.pendingHash;
    if (!h) return;
    if (h[0] < this.base) { this.loadEarlier(this.base - Math.max(0, h[0] - 100)); return; }
    if (h[0] >= this.base + this.raw.length) return; // not here yet
    this.pendingHash = null;
    this.spacer.style.height = (this.raw.length * LH) + "px";
    this.scroll.scrollTop = Math.max(0, (h[0] - this.base - 3) * LH);
  };

  Viewer.prototype.draw = function () {
    var n = this.raw.length;
    this.spacer.style.height = (n * LH) + "px";
    if (this.pendingHash) this.reveal();
    else if (this.follow && n) this.scroll.scrollTop = this.scroll.scrollHeight;
    if (!this.follow && this.fresh > 0) {
      this.jumpEl.hidden = false;
      this.jumpEl.textContent = this.fresh + " new line" + (this.fresh === 1 ? "" : "s") + " ↓";
    }
    var top = this.scroll.scrollTop, height = this.scroll.clientHeight || 600;
    var first = Math.max(0, Math.floor(top / LH) - OVERSCAN);
    var last = Math.min(n, Math.ceil((top + height) / LH) + OVERSCAN);
    var frag = document.createDocumentFragment();
    var hit = this.matchAt >= 0 ? this.matches[this.matchAt] : -1;
    for (var i = first; i < last; i++) {
      var off = this.base + i, row = document.createElement("div");
      row.className = "lv-line";
      row.id = "L" + (off + 1);
      if (this.sel && off >= this.sel[0] && off <= this.sel[1]) row.className += " lv-sel";
      if (i === hit) row.className += " lv-hit";
      var a = document.createElement("a");
      a.href = "#L" + (off + 1);
      a.setAttribute("data-n", off);
      a.textContent = String(off + 1);
      row.appendChild(a);
      var segs = this.lines[i].segs;
      for (var s = 0; s < segs.length; s++) {
        var span = document.createElement("span");
        applyStyle(span, segs[s].st);
        span.textContent = segs[s].t;
        row.appendChild(span);
      }
      frag.appendChild(row);
    }
    this.rowsEl.style.transform = "translateY(" + (first * LH) + "px)";
    this.rowsEl.replaceChildren(frag);
    this.updateStatus();
  };

  // ---- loading ----------------------------------------------------------

  Viewer.prototype.stream = function (offset) {
    var v = this;
    if (!window.EventSource) { this.poll(); return; }
    this.mode = "connecting";
    var got = false, opened = false;
    var es = new EventSource(this.src + "?follow=true&offset=" + offset);
    this.es = es;
    var fallback = setTimeout(function () { if (!opened) { es.close(); v.poll(); } }, 5000);
    es.onopen = function () { opened = true; v.mode = "live"; v.updateStatus(); };
    es.onmessage = function (e) {
      got = true;
      var off = parseInt(e.lastEventId, 10), line;
      try { line = JSON.parse(e.data); } catch (err) { return; }
      v.append(isNaN(off) ? v.base + v.raw.length : off, [line]);
    };
    es.addEventListener("end", function () {
      es.close(); clearTimeout(fallback);
      v.finish();
    });
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED && !v.complete) {
        // refused (not 200) or not an event stream: fall back to polling
        clearTimeout(fallback);
        v.poll();
      } else if (!got && !opened) {
        v.mode = "reconnecting"; v.updateStatus();
      }
    };
  };

  // finish marks the log complete and refreshes the task's header (its
  // state and end time) from the page.
  Viewer.prototype.finish = function () {
    this.complete = true; this.mode = "complete"; this.schedule();
    if (!window.fetch || !window.DOMParser) return;
    fetch(location.pathname, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : ""; })
      .then(function (html) {
        var fresh = html && new DOMParser().parseFromString(html, "text/html").getElementById("task-head");
        var cur = document.getElementById("task-head");
        if (fresh && cur) cur.replaceWith(document.importNode(fresh, true));
      }).catch(function () {});
  };

  Viewer.prototype.page = function (offset, limit) {
    return fetch(this.src + "?offset=" + offset + "&limit=" + limit, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); });
  };

  Viewer.prototype.poll = function () {
    var v = this;
    if (this.es) { this.es.close(); this.es = null; }
    this.mode = "polling";
    var next = this.base + this.raw.length;
    this.page(next, PAGE).then(function (p) {
      v.append(p.offset, p.lines || []);
      if (p.complete) { v.finish(); return; }
      setTimeout(function () { v.poll(); }, (p.lines || []).length >= PAGE ? 0 : 1000);
    }).catch(function (err) {
      v.setStatus("polling failed: " + err.message + "; retrying");
      setTimeout(function () { v.poll(); }, 3000);
    });
  };

  // loadEarlier adds up to count lines before the first loaded one. The
  // whole loaded part is parsed again from its new start, so that colours
  // set before the old start reach the lines after it.
  Viewer.prototype.loadEarlier = function (count) {
    if (this.loading || this.base === 0) return;
    var v = this, from = Math.max(0, this.base - count), to = this.base, got = [];
    this.loading = true;
    this.earlierEl.disabled = true;
    function step(off) {
      if (off >= to) return Promise.resolve();
      return v.page(off, Math.min(PAGE, to - off)).then(function (p) {
        var ls = p.lines || [];
        for (var i = 0; i < ls.length; i++) got.push(ls[i]);
        if (!ls.length) return;
        return step(off + ls.length);
      });
    }
    step(from).then(function () {
      var keepTop = v.scroll.scrollTop;
      v.raw = got.concat(v.raw);
      v.base = to - got.length;
      var p = new Parser(), lines = new Array(v.raw.length);
      for (var i = 0; i < v.raw.length; i++) lines[i] = p.line(v.raw[i]);
      v.lines = lines; v.parser = p;
      v.spacer.style.height = (v.raw.length * LH) + "px";
      if (!v.follow) v.scroll.scrollTop = keepTop + got.length * LH;
      if (v.query) v.search(v.query, 0);
      v.loading = false; v.earlierEl.disabled = false;
      v.schedule();
    }).catch(function (err) {
      v.loading = false; v.earlierEl.disabled = false;
      v.setStatus("loading earlier lines failed: " + err.message);
    });
  };

  // ---- search -----------------------------------------------------------

  Viewer.prototype.search = function (q, dir) {
    if (q !== this.query) {
      this.query = q; this.matches = []; this.matchAt = -1;
      if (q) {
        var lq = q.toLowerCase();
        for (var i = 0; i < this.lines.length; i++) if (this.lines[i].plain.toLowerCase().indexOf(lq) >= 0) this.matches.push(i);
      }
      if (this.matches.length) this.matchAt = 0;
    } else if (this.matches.length && dir) {
      this.matchAt = (this.matchAt + dir + this.matches.length) % this.matches.length;
    }
    this.matchesEl.textContent = q ? (this.matches.length ? (this.matchAt + 1) + " of " + this.matches.length : "no match") : "";
    if (this.matchAt >= 0) {
      this.follow = false;
      this.scroll.scrollTop = Math.max(0, (this.matches[this.matchAt] - 3) * LH);
    }
    this.draw();
  };

  var root = document.querySelector(".logview[data-src]");
  if (root) window.errandLog = new Viewer(root);
})();
