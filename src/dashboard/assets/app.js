// flaggit dashboard: live updates. The server pushes "namespace/name" when a canary the
// viewer may see changes; the page then re-renders its <main> from the same URL.
(function () {
  "use strict";
  if (!window.EventSource) return;
  var live = document.getElementById("live");
  var pending = null;
  function relevant(id) {
    if (!id || id === "/") return true;
    if (document.getElementById("canaries")) return true;
    var summary = document.querySelector(".summary[data-canary]");
    return summary !== null && summary.getAttribute("data-canary") === id;
  }
  function refresh() {
    pending = null;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) return;
        var doc = new DOMParser().parseFromString(text, "text/html");
        var next = doc.getElementById("main");
        var main = document.getElementById("main");
        if (!next || !main) return;
        var focused = document.activeElement && document.activeElement.name;
        main.innerHTML = next.innerHTML;
        if (focused) {
          var again = main.querySelector("[name='" + focused + "']");
          if (again) again.focus();
        }
        if (live) live.textContent = "Updated " + new Date().toLocaleTimeString();
      })
      .catch(function () {});
  }
  var source = new EventSource("/events");
  source.addEventListener("change", function (e) {
    if (!relevant(e.data)) return;
    if (pending === null) pending = setTimeout(refresh, 50);
  });
  source.onopen = function () { if (live) live.textContent = "Live"; };
  source.onerror = function () { if (live) live.textContent = "Reconnecting…"; };
})();
