// Edgeport dashboard: the hub renders every fragment; this script only fetches them with the viewer's
// token and swaps them in, again every few seconds, so the pages stay live without a reload.
// The token lives in this tab's sessionStorage and goes with every call as `Authorization: Bearer`;
// a 401 answer sends the viewer back to the login page.
(function () {
  "use strict";
  var KEY = "edgeport.token";
  var page = document.body.dataset.page;

  function safeNext(next) {
    // Only a path on this hub: never an absolute or protocol-relative URL from the query string.
    return next && next.charAt(0) === "/" && next.charAt(1) !== "/" ? next : "/";
  }

  function toLogin(reason) {
    sessionStorage.removeItem(KEY);
    var query = new URLSearchParams({ next: location.pathname + location.search });
    if (reason) query.set("reason", reason);
    location.assign("/ui/login?" + query.toString());
  }

  if (page === "login") {
    var params = new URLSearchParams(location.search);
    var note = document.getElementById("login-note");
    if (params.get("reason") === "refused") {
      note.textContent = "The hub refused that token: log in with another.";
      note.className = "note error";
    }
    document.getElementById("login-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var token = document.getElementById("token").value.trim();
      if (!token) return;
      sessionStorage.setItem(KEY, token);
      location.assign(safeNext(params.get("next")));
    });
    return;
  }

  var token = sessionStorage.getItem(KEY);
  if (!token) {
    toLogin("");
    return;
  }
  document.getElementById("logout").addEventListener("click", function () {
    sessionStorage.removeItem(KEY);
    location.assign("/ui/login");
  });

  var live = document.getElementById("live");

  function load(el) {
    if (el.dataset.busy === "1") return; // a slow answer is not overtaken by the next poll
    el.dataset.busy = "1";
    fetch(el.dataset.src, { headers: { Authorization: "Bearer " + token }, cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          toLogin("refused");
          return null;
        }
        return response.text().then(function (text) {
          if (!response.ok) {
            live.textContent = "hub answered " + response.status;
            live.className = "live stale";
            return;
          }
          if (text !== el.dataset.shown) { // unchanged fragments are left alone (no flicker, no lost focus)
            el.innerHTML = text;
            el.dataset.shown = text;
          }
          live.textContent = "live · " + new Date().toLocaleTimeString();
          live.className = "live";
        });
      })
      .catch(function () {
        live.textContent = "hub unreachable";
        live.className = "live stale";
      })
      .finally(function () {
        el.dataset.busy = "0";
      });
  }

  var parts = document.querySelectorAll("[data-src]");
  parts.forEach(function (el) {
    load(el);
    setInterval(function () {
      if (!document.hidden) load(el);
    }, Number(el.dataset.every) || 2000);
  });

  // Controls that change what a fragment shows (the fleet's selector and page, a chart's window):
  // they rewrite its data-src, keep the address bar in step, and load it at once.
  function retarget(id, base, query) {
    var el = document.getElementById(id);
    el.dataset.src = base + "?" + query.toString();
    load(el);
  }
  var filter = document.getElementById("filter");
  if (filter) {
    filter.addEventListener("submit", function (event) {
      event.preventDefault();
      var query = new URLSearchParams({ selector: filter.elements.selector.value.trim(), page: "0" });
      history.replaceState(null, "", "/?" + query.toString());
      retarget("fragment", "/ui/fragments/fleet", query);
    });
    document.addEventListener("click", function (event) {
      var link = event.target.closest("[data-page-link]");
      if (!link) return;
      event.preventDefault();
      var query = new URLSearchParams({ selector: filter.elements.selector.value.trim(), page: link.dataset.pageLink });
      history.replaceState(null, "", "/?" + query.toString());
      retarget("fragment", "/ui/fragments/fleet", query);
    });
  }
  var windowPicker = document.getElementById("window");
  if (windowPicker) {
    windowPicker.addEventListener("change", function () {
      var chosen = windowPicker.value.split("/");
      var charts = document.getElementById("charts");
      var base = charts.dataset.src.split("?")[0];
      retarget("charts", base, new URLSearchParams({ since: chosen[0], every: chosen[1] }));
    });
  }
})();
