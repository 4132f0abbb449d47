// The results dashboard: the segment filter applies as soon as it changes, and the page can
// reload itself every minute (remembered per browser). No inline script: CSP script-src 'self'.
"use strict";
(function () {
  const form = document.getElementById("dashboard-filter");
  const select = document.getElementById("segment");
  const refresh = document.getElementById("auto-refresh");
  if (form && select) {
    select.addEventListener("change", function () { form.submit(); });
  }
  if (!refresh) return;
  const KEY = "nudge.dashboard.refresh";
  const seconds = Number(refresh.dataset.seconds) || 60;
  let timer = null;

  function arm() {
    if (timer) { clearTimeout(timer); timer = null; }
    if (refresh.checked) {
      timer = setTimeout(function () {
        // a hidden tab waits until it is looked at again
        if (document.visibilityState === "visible") { window.location.reload(); } else { arm(); }
      }, seconds * 1000);
    }
  }

  try { refresh.checked = window.localStorage.getItem(KEY) === "1"; } catch (e) { /* private mode */ }
  refresh.addEventListener("change", function () {
    try { window.localStorage.setItem(KEY, refresh.checked ? "1" : "0"); } catch (e) { /* ignore */ }
    arm();
  });
  arm();
})();
