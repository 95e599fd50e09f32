// Errand's page script: refreshes the live part of a page (#live) while
// the page asks for it (data-refresh on body), without losing the
// scroll position, and stops when the tab is hidden.
(function () {
  "use strict";
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
        if (doc.body.getAttribute("data-refresh")) setTimeout(tick, ms);
      })
      .catch(function () { setTimeout(tick, ms * 2); });
  }
  setTimeout(tick, ms);
})();
