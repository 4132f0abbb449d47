// The agent inbox: claim buttons, waiting clocks, and the queue redrawn when it changes
// (server-sent events from /console/api/inbox/stream; no reload needed).
"use strict";
(function () {
  const tbody = document.querySelector("#queue tbody");
  const message = document.getElementById("inbox-message");
  const dot = document.getElementById("live");
  const me = (document.getElementById("whoami") || {}).textContent || "";

  function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

  function draw(rows) {
    tbody.replaceChildren();
    document.getElementById("summary").textContent = rows.length + " in the queue · most urgent first";
    if (!rows.length) {
      const tr = document.createElement("tr"); tr.className = "empty";
      const td = cell("Nobody is waiting. New hand-offs appear here by themselves.");
      td.colSpan = 9; td.className = "muted"; tr.append(td); tbody.append(tr); return;
    }
    for (const row of rows) {
      const tr = document.createElement("tr");
      tr.dataset.id = row.id;
      if (row.agent && me.trim().startsWith(row.agent + " ")) tr.className = "claimed-by-me";
      const name = document.createElement("td");
      const link = document.createElement("a");
      link.href = "/console/conversations/" + encodeURIComponent(row.id); link.textContent = row.name;
      const small = document.createElement("small"); small.className = "muted"; small.textContent = row.id;
      name.append(link, document.createElement("br"), small);
      const priority = document.createElement("td");
      const badge = document.createElement("span"); badge.className = "badge p" + row.priority;
      badge.textContent = "P" + row.priority; priority.append(badge);
      const waiting = cell(""); waiting.className = "waiting"; waiting.dataset.seconds = row.waiting_seconds || 0;
      const action = document.createElement("td");
      if (!row.agent) {
        const button = document.createElement("button");
        button.className = "claim primary"; button.dataset.id = row.id; button.textContent = "Claim";
        action.append(button);
      }
      tr.append(name, cell(row.reason.replaceAll("_", " ")), priority, waiting, cell(row.segment),
                cell(row.channel), cell(row.language), cell(row.agent || "—"), action);
      tbody.append(tr);
    }
    tick();
  }

  let loaded = Date.now();
  function tick() {
    const extra = (Date.now() - loaded) / 1000;
    for (const td of document.querySelectorAll("td.waiting")) {
      td.textContent = nudge.minutes(Number(td.dataset.seconds) + extra);
    }
  }

  async function refresh() {
    const result = await nudge.api("GET", "/console/api/inbox");
    if (result.ok) { loaded = Date.now(); draw(result.data.conversations); }
  }

  tbody.addEventListener("click", async (event) => {
    const button = event.target.closest("button.claim");
    if (!button) return;
    button.disabled = true;
    const id = button.dataset.id;
    const result = await nudge.api("POST", "/console/api/conversations/" + encodeURIComponent(id) + "/claim");
    if (result.ok) { window.location = "/console/conversations/" + encodeURIComponent(id); return; }
    message.className = "error"; message.textContent = result.data.error || "Could not claim it.";
    refresh();
  });

  const events = new EventSource("/console/api/inbox/stream");
  events.onopen = () => dot.classList.add("on");
  events.onerror = () => dot.classList.remove("on");
  events.onmessage = () => refresh();
  events.addEventListener("logout", () => { window.location = "/console/login?expired=1"; });
  tick();
  setInterval(tick, 1000);
})();
