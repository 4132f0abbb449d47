// The template editor: live preview as you type, propose, approve / reject / roll back, diffs.
// Everything goes through window.nudge.api (console.js), which sends the CSRF token.
"use strict";
(function () {
  const root = document.getElementById("editor");
  if (!root) return;
  const name = root.dataset.name;
  const base = "/console/api/templates/" + name;
  const $ = (id) => document.getElementById(id);
  const text = $("text");
  const liveText = text.value;

  function say(element, message, kind) {
    element.textContent = message;
    element.className = kind || "";
  }

  function issueList(target, issues) {
    target.replaceChildren();
    if (!issues.length) {
      const li = document.createElement("li");
      li.className = "clean";
      li.textContent = "No issues.";
      target.append(li);
      return;
    }
    for (const issue of issues) {
      const li = document.createElement("li");
      li.className = issue.level;
      li.textContent = issue.level + " [" + issue.code + "] " +
        (issue.line ? "line " + issue.line + ": " : "") + issue.message;
      target.append(li);
    }
  }

  // --- preview ------------------------------------------------------------------------
  let timer = null;
  let asked = 0;
  function schedulePreview() {
    clearTimeout(timer);
    $("text-count").textContent = text.value.length;
    timer = setTimeout(preview, 400);
  }

  async function preview() {
    const ticket = ++asked;
    const status = $("preview-status");
    say(status, "Rendering…", "muted");
    const via = $("via");
    const {ok, data} = await window.nudge.api("POST", base + "/preview", {
      text: text.value, channel: $("channel").value, segment: $("segment").value,
      jurisdiction: $("jurisdiction").value, via: via ? via.value : null,
    });
    if (ticket !== asked) return;  // a newer keystroke already asked again
    const body = $("preview-body");
    if (!ok) {
      say(status, data.error || "The preview failed.", "error");
      body.textContent = "";
      return;
    }
    const render = data.render;
    const issues = [...data.static, ...(render ? render.issues : [])];
    issueList($("issues"), issues);
    showDebtor(data.debtor);
    if (!render) {
      say(status, "No message template uses this partial yet.", "notice");
      body.textContent = "";
      $("preview-facts").hidden = true;
      return;
    }
    const through = data.via ? " through " + data.via : "";
    if (render.error) {
      say(status, "It does not render" + through + ": " + render.error, "error");
      body.textContent = "";
      body.classList.add("failed");
      $("preview-facts").hidden = true;
      return;
    }
    body.classList.remove("failed");
    body.textContent = render.body;
    say(status, "As sent by " + data.channel + through + ", " + render.jurisdiction + ".", "muted");
    $("preview-facts").hidden = false;
    $("preview-subject").textContent = render.subject === null ? "—" : render.subject;
    if (render.encoding) {
      let sms = render.encoding + ", " + render.segments + " segment" + (render.segments === 1 ? "" : "s") +
        ", " + render.characters + " characters";
      if (render.non_gsm.length) sms += " (UCS-2 because of: " + render.non_gsm.join(" ") + ")";
      $("preview-sms").textContent = sms;
    } else {
      $("preview-sms").textContent = "—";
    }
  }

  function showDebtor(debtor) {
    const list = $("debtor");
    list.replaceChildren();
    if (!debtor) return;
    const rows = [["Segment", debtor.segment + " — " + debtor.description],
      ["Days past due", debtor.days_past_due], ["Balance", debtor.amount + " " + debtor.currency],
      ["Product", debtor.product], ["History", debtor.payment_history],
      ["Creditor", debtor.creditor], ["Jurisdiction", debtor.jurisdiction]];
    for (const [label, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = value;
      list.append(dt, dd);
    }
  }

  text.addEventListener("input", schedulePreview);
  for (const id of ["channel", "segment", "jurisdiction", "via"]) {
    const element = $(id);
    if (element) element.addEventListener("change", preview);
  }

  // --- propose ------------------------------------------------------------------------
  const form = $("propose-form");
  if (form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const result = $("propose-result");
      const button = $("propose");
      button.disabled = true;
      say(result, "Checking the draft in every channel and jurisdiction it serves…", "muted");
      const {ok, data} = await window.nudge.api("POST", base + "/versions",
                                                {text: text.value, note: $("note").value});
      button.disabled = false;
      if (ok) {
        say(result, "Proposed as version " + data.number + ". Another person must approve it.", "ok");
        window.location.reload();
        return;
      }
      say(result, data.error || "Refused.", "error");
      if (data.issues) {
        const list = document.createElement("ul");
        issueList(list, data.issues);
        result.append(list);
      }
    });
    $("reset").addEventListener("click", () => {
      text.value = liveText;
      schedulePreview();
    });
  }

  // --- versions: diff, approve, reject, roll back --------------------------------------
  async function showDiff(a, b) {
    const {ok, data} = await window.nudge.api("GET", base + "/diff?a=" + a + "&b=" + b);
    const box = $("diff-box");
    const pre = $("diff");
    pre.replaceChildren();
    box.hidden = false;
    $("diff-title").textContent = "Diff v" + a + " → v" + b;
    if (!ok) {
      pre.textContent = data.error || "No diff.";
      return;
    }
    if (!data.diff) {
      pre.textContent = "The same text.";
      return;
    }
    for (const line of data.diff.split("\n")) {
      const span = document.createElement("span");
      if (line.startsWith("+") && !line.startsWith("+++")) span.className = "add";
      else if (line.startsWith("-") && !line.startsWith("---")) span.className = "del";
      else if (line.startsWith("@@")) span.className = "hunk";
      span.textContent = line + "\n";
      pre.append(span);
    }
    box.scrollIntoView({block: "nearest"});
  }

  const history = $("history");
  history.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const row = button.closest("tr");
    const number = row.dataset.number;
    const action = button.dataset.action;
    const result = $("action-result");
    if (action === "diff") {
      showDiff(button.dataset.a, button.dataset.b);
      return;
    }
    let body = {};
    if (action === "reject") {
      const reason = window.prompt("Why (optional)?", "");
      if (reason === null) return;
      body = {reason};
    } else if (action === "rollback") {
      if (!window.confirm("Make version " + number + " live again, now, for every message?")) return;
    } else if (action === "approve") {
      if (!window.confirm("Approve version " + number + "? It goes live at once.")) return;
    }
    button.disabled = true;
    say(result, "…", "muted");
    const {ok, data} = await window.nudge.api("POST", base + "/versions/" + number + "/" + action, body);
    button.disabled = false;
    if (ok) {
      window.location.reload();
      return;
    }
    say(result, data.error || "Refused.", "error");
    if (data.issues) {
      const list = document.createElement("ul");
      issueList(list, data.issues);
      result.append(list);
    }
  });

  preview();
})();
