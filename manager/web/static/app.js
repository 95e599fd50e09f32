// Errand's page script: refreshes the live part of a page (#live) while
// the page asks for it (data-refresh on body), without losing the
// scroll position, and stops when the tab is hidden.
(function () {
  "use strict";

  // Draw the run page's dependencies: a line from each stage to every
  // stage that waits for it.
  var SVG = "http://www.w3.org/2000/svg";
  function drawEdges() {
    var graph = document.querySelector(".graph");
    if (!graph) return;
    var old = graph.querySelector("svg.edges");
    if (old) old.remove();
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "edges");
    svg.setAttribute("width", graph.scrollWidth);
    svg.setAttribute("height", graph.scrollHeight);
    var box = graph.getBoundingClientRect();
    var x0 = box.left - graph.scrollLeft, y0 = box.top - graph.scrollTop;
    graph.querySelectorAll("[data-depends]").forEach(function (to) {
      var t = to.getBoundingClientRect();
      to.getAttribute("data-depends").split(" ").forEach(function (name) {
        var from = graph.querySelector('[data-stage="' + (window.CSS && CSS.escape ? CSS.escape(name) : name) + '"]');
        if (!from) return;
        var f = from.getBoundingClientRect();
        var ax = f.right - x0, ay = f.top + Math.min(f.height / 2, 20) - y0;
        var bx = t.left - x0, by = t.top + Math.min(t.height / 2, 20) - y0;
        var mid = (ax + bx) / 2;
        var p = document.createElementNS(SVG, "path");
        p.setAttribute("d", "M" + ax + "," + ay + " C" + mid + "," + ay + " " + mid + "," + by + " " + bx + "," + by);
        svg.appendChild(p);
      });
    });
    graph.insertBefore(svg, graph.firstChild);
  }
  drawEdges();
  window.addEventListener("resize", drawEdges);
  document.addEventListener("errand:refreshed", drawEdges);

  // Keyboard: r on a run page restarts it (the Restart button, which
  // is shown only to those who may restart a run that has ended). Keys
  // typed into a field, or with a modifier, are the field's.
  document.addEventListener("keydown", function (e) {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    if (e.key === "r") {
      var b = document.getElementById("restart-run");
      if (b) { e.preventDefault(); b.click(); }
    }
  });

  var ms = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!ms || !window.fetch || !window.DOMParser) return;
  function tick() {
    if (document.hidden) { setTimeout(tick, ms); return; }
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live"), cur = document.getElementById("live");
        if (fresh && cur && document.activeElement && !cur.contains(document.activeElement)) {
          cur.replaceWith(document.importNode(fresh, true));
        } else if (fresh && cur && !document.activeElement) {
          cur.replaceWith(document.importNode(fresh, true));
        }
        document.dispatchEvent(new Event("errand:refreshed"));
        if (doc.body.getAttribute("data-refresh")) setTimeout(tick, ms);
      })
      .catch(function () { setTimeout(tick, ms * 2); });
  }
  setTimeout(tick, ms);
})();
