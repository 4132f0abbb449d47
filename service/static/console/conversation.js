// One conversation: the case, the transcript (live), claim, reply with an SMS counter,
// canned replies, notes, outcomes, hand back.
"use strict";
(function () {
  const root = document.getElementById("conversation");
  const id = root.dataset.id;
  const me = root.dataset.me;
  const base = "/console/api/conversations/" + encodeURIComponent(id);
  const list = document.getElementById("transcript");
  const statusOf = {};      // message id -> the element showing its delivery state
  let conversation = null;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function when(at) { return at ? new Date(at * 1000).toLocaleString() : ""; }
  function say(target, ok, text) {
    const node = document.getElementById(target);
    node.className = ok ? "ok" : "error"; node.textContent = text;
  }

  function addEntry(entry) {
    if (entry.kind === "event" && entry.name === "delivery") {
      const node = statusOf[entry.message_id];
      if (node) node.textContent = entry.status + (entry.error_code ? " (" + entry.error_code + ")" : "");
      return;
    }
    const li = el("li");
    if (entry.kind === "message") {
      const out = entry.direction === "out";
      li.className = (out ? "out" : "in") + (entry.template === "agent_message" ? " agent" : "");
      const bubble = el("div", "bubble", (entry.subject ? "[" + entry.subject + "]\n" : "") + (entry.body || ""));
      const meta = el("div", "meta", entry.channel + " · " + when(entry.at) +
                      (out ? " · " + (entry.template === "agent_message" ? "agent" : "bot") + " · " : ""));
      if (out) {
        const state = el("span", "delivery", entry.status || "queued");
        statusOf[entry.message_id] = state;
        meta.append(state);
      }
      li.append(bubble, meta);
    } else if (entry.kind === "event" && entry.name === "note") {
      li.append(el("div", "note", (entry.vulnerability ? "⚠ vulnerability · " : "") + entry.by + ": " + entry.text));
    } else {
      const words = [entry.name.replaceAll("_", " ")];
      for (const field of ["reason", "agent", "by", "outcome", "verdict", "detail"]) {
        if (entry[field]) words.push(field + ": " + entry[field]);
      }
      li.append(el("div", "event", words.join(" · ") + " · " + when(entry.at)));
    }
    list.append(li);
    list.scrollTop = list.scrollHeight;
  }

  function drawCase(data) {
    const box = document.getElementById("case");
    box.replaceChildren(el("h2", "", "Case"));
    const c = data.case;
    if (!c) { box.append(el("p", "muted", "An unknown sender: no case.")); return; }
    if (c.flags.protected) {
      box.append(el("p", "notice", "Protected debtor: " + (c.flags.stop_states.join(", ") || "hardship") +
                                   ". Be gentle; no pressure, no persuasion."));
    }
    for (const state of c.flags.liftable) {
      const button = el("button", "", "Lift " + state.replaceAll("_", " "));
      button.className = "lift";
      button.addEventListener("click", async () => {
        const note = prompt("Why may " + state.replaceAll("_", " ") + " be lifted? (kept in the audit log)");
        if (note === null) return;
        const result = await nudge.api("POST", base + "/stop-states/" + encodeURIComponent(state) + "/lift", {note});
        if (!result.ok) alert(result.data.error);
        await load();
      });
      box.append(button);
    }
    const dl = el("dl", "facts");
    const facts = [["Name", c.name], ["Reference", c.reference], ["Creditor", c.creditor],
                   ["Balance", c.balance + " " + c.currency], ["Due", c.due_date + " (" + c.days_past_due + " days past due)"],
                   ["Segment", c.segment], ["Language", c.language], ["Prefers", c.preferred_channel],
                   ["Phone", c.phone || "—"], ["Email", c.email || "—"], ["Date of birth", c.date_of_birth],
                   ["Postcode", c.postcode]];
    for (const [k, v] of facts) { dl.append(el("dt", "", k), el("dd", "", v)); }
    box.append(dl);
    if (c.flags.detail) {
      box.append(el("h3", "", "Vulnerability and stop-states (supervisors)"));
      const ul = el("ul");
      for (const [name, rec] of Object.entries(c.flags.detail)) {
        ul.append(el("li", "", name + " since " + when(rec.since) + " · " + (rec.source || "") + " · " + (rec.by || "")));
      }
      if (c.flags.hardship) ul.append(el("li", "", "hardship noted: affordable options first"));
      if (!ul.children.length) ul.append(el("li", "muted", "none"));
      box.append(ul);
    }
    box.append(el("h3", "", "Arrangement"));
    const a = c.arrangement;
    if (!a) { box.append(el("p", "muted", "None open.")); }
    else {
      box.append(el("p", "", a.kind + " · " + a.state + " · " + a.total + " " + c.currency + " (" + a.outstanding + " outstanding)"));
      const ul = el("ul");
      for (const i of a.instalments) ul.append(el("li", "", "#" + i.number + " " + i.date + ": " + i.amount + " (paid " + i.paid + ")"));
      box.append(ul);
    }
  }

  function drawState() {
    const c = conversation;
    const mine = c.owner === "agent" && c.agent === me;
    document.getElementById("state").textContent =
      c.owner === "agent" ? ("With a person · " + (c.reason || "").replaceAll("_", " ") + " · " + (c.agent ? "claimed by " + c.agent : "not claimed yet"))
                          : "The bot is handling this conversation.";
    document.getElementById("claim").hidden = !(c.owner === "agent" && !c.agent);
    document.getElementById("handback").hidden = !mine;
    document.getElementById("reply-form").hidden = !mine;
    document.getElementById("work").hidden = !mine;
    document.getElementById("reply-channel").textContent = c.channel || "the preferred channel";
  }

  async function load() {
    const result = await nudge.api("GET", base);
    if (!result.ok) { document.getElementById("state").textContent = result.data.error || "Could not load."; return; }
    conversation = result.data.conversation;
    list.replaceChildren();
    for (const entry of result.data.transcript) addEntry(entry);
    drawCase(result.data);
    drawState();
    const canned = document.getElementById("canned");
    canned.replaceChildren(el("option", "", "—"));
    for (const c of result.data.canned) { const o = el("option", "", c.title); o.value = c.text; canned.append(o); }
  }

  // --- actions --------------------------------------------------------------------------
  document.getElementById("claim").addEventListener("click", async () => {
    const result = await nudge.api("POST", base + "/claim");
    if (!result.ok) alert(result.data.error);
    await load();
  });
  document.getElementById("handback").addEventListener("click", async () => {
    const result = await nudge.api("POST", base + "/handback");
    if (!result.ok) { say("reply-result", false, result.data.error); return; }
    await load();
  });
  const reply = document.getElementById("reply");
  const counter = document.getElementById("counter");
  let counting = null;
  async function count() {
    const result = await nudge.api("POST", "/console/api/sms-segments", {text: reply.value});
    if (!result.ok) return;
    const d = result.data;
    counter.textContent = d.characters + " characters · " + d.segments + " SMS segment" + (d.segments === 1 ? "" : "s") +
      " · " + d.encoding + (d.non_gsm.length ? " (because of " + d.non_gsm.join(" ") + ")" : "");
    counter.classList.toggle("over", d.segments > 4);
  }
  reply.addEventListener("input", () => { clearTimeout(counting); counting = setTimeout(count, 150); });
  document.getElementById("canned").addEventListener("change", (event) => {
    if (event.target.value) { reply.value = event.target.value; count(); reply.focus(); }
  });
  document.getElementById("reply-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = document.getElementById("send");
    button.disabled = true;
    const result = await nudge.api("POST", base + "/reply", {text: reply.value});
    button.disabled = false;
    const d = result.data;
    if (result.status === 200) { say("reply-result", true, "Sent."); reply.value = ""; count(); }
    else if (d.verdict === "defer") say("reply-result", false, "Held until " + d.until + ": " + d.detail);
    else if (d.verdict === "refuse") say("reply-result", false, "Not sent: " + d.detail + " (" + d.reason + ")");
    else say("reply-result", false, d.error || "Not sent.");
  });
  document.getElementById("note-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const note = document.getElementById("note");
    const result = await nudge.api("POST", base + "/notes", {text: note.value,
      vulnerability: document.getElementById("note-vulnerability").checked});
    if (result.ok) { note.value = ""; say("note-result", true, "Noted."); }
    else say("note-result", false, result.data.error);
  });
  const kind = document.getElementById("outcome-kind");
  kind.addEventListener("change", () => {
    document.getElementById("promise-fields").hidden = kind.value !== "promise";
    document.getElementById("plan-fields").hidden = kind.value !== "plan";
  });
  document.getElementById("outcome-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {kind: kind.value};
    if (kind.value === "promise") {
      body.amount = document.getElementById("promise-amount").value;
      body.date = document.getElementById("promise-date").value;
    } else if (kind.value === "plan") {
      body.instalments = Number(document.getElementById("plan-count").value);
      body.frequency = document.getElementById("plan-frequency").value;
      body.first_date = document.getElementById("plan-first").value;
    }
    const result = await nudge.api("POST", base + "/outcome", body);
    if (result.ok) { say("outcome-result", true, "Recorded."); await load(); }
    else say("outcome-result", false, result.data.error);
  });

  // --- live -----------------------------------------------------------------------------
  const dot = document.getElementById("live");
  const events = new EventSource(base + "/stream");
  events.onopen = () => dot.classList.add("on");
  events.onerror = () => dot.classList.remove("on");
  events.onmessage = (message) => {
    const entry = JSON.parse(message.data);
    if (entry.kind === "event" && ["claimed", "handed_back", "handoff"].includes(entry.name)) { load(); return; }
    addEntry(entry);
  };
  events.addEventListener("logout", () => { window.location = "/console/login?expired=1"; });
  load();
})();
