// Shared by every console page: the CSRF token for fetch(), and a JSON helper.
"use strict";
window.nudge = (function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  async function api(method, url, body) {
    const options = {method, headers: {"Accept": "application/json"}, credentials: "same-origin"};
    if (method !== "GET") {
      options.headers["X-CSRF-Token"] = csrf;
      if (body !== undefined) {
        options.headers["Content-Type"] = "application/json";
        options.body = JSON.stringify(body);
      }
    }
    const response = await fetch(url, options);
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (response.status === 401) {
      window.location = "/console/login?expired=1&next=" + encodeURIComponent(window.location.pathname);
    }
    return {ok: response.ok, status: response.status, data};
  }

  function minutes(seconds) {
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  return {csrf, api, minutes};
})();
