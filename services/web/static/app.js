// Printfarm dashboard: plain JavaScript, no build step. Reads /api/* (JSON),
// acts with POST form data, and stays current through /api/events (SSE).
"use strict";

const state = { role: null, printers: [], jobs: [], bundles: {}, events: [], es: null,
  refreshTimer: null, pollTimer: null, view: "printers" };
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

let toastTimer = null;
function toast(msg, ok) {
  const t = $("#toast");
  t.textContent = msg;
  t.className = ok ? "ok" : "err";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, ok ? 3000 : 8000);
}

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin" };
  if (body !== undefined) opts.body = body;
  let r;
  try {
    r = await fetch(path, opts);
  } catch (e) {
    throw new Error("pf-web unreachable: " + e.message);
  }
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401 && path !== "/api/login") {
    showLogin("Your session ended: log in again.");
  }
  if (!r.ok) {
    const err = new Error((data && data.error) || ("HTTP " + r.status));
    err.status = r.status;
    throw err;
  }
  return data;
}

function form(obj) {
  const f = new URLSearchParams();
  for (const [k, v] of Object.entries(obj || {})) f.append(k, v);
  return f;
}

// Runs an action and reports its outcome.
async function act(label, method, path, body, button) {
  if (button) button.disabled = true;
  try {
    await api(method, path, body);
    toast(label + ": done", true);
    scheduleRefresh(0);
    return true;
  } catch (e) {
    toast(label + " failed: " + e.message, false);
    return false;
  } finally {
    if (button) button.disabled = false;
  }
}

// ------------------------------------------------------------ login

function showLogin(msg) {
  stopLive();
  $("#toast").hidden = true;
  state.events = [];
  state.role = null;
  $("#app-view").hidden = true;
  $("#login-view").hidden = false;
  const e = $("#login-error");
  e.textContent = msg || "";
  e.hidden = !msg;
}

function showApp(role) {
  state.role = role;
  document.body.classList.toggle("viewer", role !== "operator");
  $("#role").textContent = role;
  $("#login-view").hidden = true;
  $("#app-view").hidden = false;
  refresh();
  startLive();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const r = await api("POST", "/api/login", form({ token: $("#token").value }));
    $("#token").value = "";
    showApp(r.role);
  } catch (e) {
    showLogin(e.message);
  }
});

$("#logout").addEventListener("click", async () => {
  try { await api("POST", "/api/logout"); } catch (e) { /* logged out anyway */ }
  showLogin("");
});

// ------------------------------------------------------------ views

for (const b of document.querySelectorAll(".tab")) {
  b.addEventListener("click", () => {
    state.view = b.dataset.view;
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === b);
    for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + state.view;
    if (state.view === "health") refreshHealth();
  });
}

function fmtDuration(s) {
  if (!isFinite(s) || s < 0) return "";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? h + "h " + m + "m" : m ? m + "m " + sec + "s" : sec + "s";
}

const STATE_LABEL = { idle: "idle", printing: "printing", paused: "paused",
  awaiting_clear: "awaiting clear", error: "error", offline: "offline", quarantined: "quarantined" };

function jobById(id) { return state.jobs.find((j) => j.id === id); }

function estimateFor(job, profile) {
  const b = job && job.bundle && state.bundles[job.bundle.sha256];
  if (!b || !b.files) return 0;
  const f = b.files.find((x) => x.profile === profile) || b.files[0];
  return f && f.metadata ? f.metadata.estimated_seconds || 0 : 0;
}

function printerCard(p) {
  const job = p.current_job_id ? jobById(p.current_job_id) : null;
  const card = el("div", { class: "card", dataset: { printerId: p.id, state: p.state } });
  card.append(el("h3", {}, el("span", { class: "name" }, p.id),
    el("span", { class: "profile" }, p.profile)));
  card.append(el("div", { class: "state" }, STATE_LABEL[p.state] || p.state));
  if (p.state === "printing" || p.state === "paused") {
    const pct = Math.max(0, Math.min(1, p.progress || 0));
    const bar = el("div", { class: "bar" }, el("div", {}));
    bar.firstChild.style.width = (pct * 100).toFixed(1) + "%";
    card.append(bar);
    const est = estimateFor(job, p.profile);
    card.append(el("div", { class: "muted progress" }, (pct * 100).toFixed(0) + "%" +
      (est ? " · about " + fmtDuration(est * (1 - pct)) + " left" : "")));
  }
  if ((p.state === "error" || p.state === "quarantined") && p.state_reason)
    card.append(el("div", { class: "reason" }, p.state_reason));
  if (p.temperatures && p.temperatures.length)
    card.append(el("div", { class: "muted temps" }, p.temperatures.map((t) =>
      t.sensor + " " + Math.round(t.actual) + (t.target ? "/" + Math.round(t.target) : "") + "°C").join(" · ")));
  if (p.materials && p.materials.length)
    card.append(el("div", { class: "muted materials" }, p.materials.map((m) =>
      "T" + m.extruder + " " + (m.material || "?") + (m.colour ? " " + m.colour : "")).join(" · ")));
  if (p.current_job_id)
    card.append(el("div", { class: "muted job" }, (p.state === "printing" ? "printing " : "last: ") +
      (job ? job.name : p.current_job_id)));
  if (state.role === "operator") {
    const actions = el("div", { class: "actions" });
    if (p.state === "awaiting_clear") {
      actions.append(el("button", { class: "action primary", dataset: { action: "clear" },
        onclick: (e) => act("Bed clear on " + p.id, "POST", "/api/printers/" + encodeURIComponent(p.id) + "/clear",
          form({ attempt_id: p.current_attempt_id || "" }), e.target) }, "Bed is clear"));
    }
    if (p.state === "quarantined") {
      actions.append(el("button", { class: "action", dataset: { action: "release" },
        onclick: (e) => act("Release " + p.id, "POST", "/api/printers/" + encodeURIComponent(p.id) + "/release",
          undefined, e.target) }, "Release from quarantine"));
    }
    if ((p.state === "printing" || p.state === "paused") && p.current_job_id) {
      actions.append(el("button", { class: "action", dataset: { action: "cancel" },
        onclick: (e) => {
          if (!confirm("Cancel job " + (job ? job.name : p.current_job_id) + " and stop this print?")) return;
          act("Cancel job", "POST", "/api/jobs/" + encodeURIComponent(p.current_job_id) + "/cancel",
            form({ cancel_running: "true" }), e.target);
        } }, "Cancel job"));
    }
    if (actions.childNodes.length) card.append(actions);
  }
  return card;
}

function renderPrinters() {
  const grid = $("#printers");
  grid.replaceChildren(...state.printers.map(printerCard));
  const counts = {};
  for (const p of state.printers) counts[p.state] = (counts[p.state] || 0) + 1;
  $("#printer-summary").textContent = state.printers.length + " printers · " +
    Object.entries(counts).map(([k, v]) => v + " " + (STATE_LABEL[k] || k)).join(" · ");
}

const FINISHED = ["done", "failed", "cancelled"];

function constraintsText(c) {
  if (!c) return "";
  const parts = [];
  for (const m of c.materials || [])
    parts.push([m.material, m.colour].filter(Boolean).join(" ") + (m.extruder !== undefined ? " (T" + m.extruder + ")" : ""));
  if (c.profiles && c.profiles.length) parts.push("profiles " + c.profiles.join(", "));
  for (const l of c.printer_labels || []) parts.push(l.key + (l.value ? "=" + l.value : ""));
  return parts.join("; ");
}

function jobRow(j) {
  const remaining = Math.max(0, j.count - j.succeeded - j.in_progress);
  const b = j.bundle && state.bundles[j.bundle.sha256];
  const est = b && b.files ? b.files.map((f) => f.profile + " " + fmtDuration((f.metadata || {}).estimated_seconds)).join(", ") : "";
  const tr = el("tr", { dataset: { jobId: j.id, state: j.state } },
    el("td", {}, el("strong", {}, j.name), el("div", { class: "muted" }, j.id)),
    el("td", {}, String(j.priority)),
    el("td", { class: "job-state" }, j.state + (j.state_reason ? " (" + j.state_reason + ")" : "")),
    el("td", {}, remaining + " / " + j.in_progress + " / " + j.succeeded + " of " + j.count),
    el("td", {}, constraintsText(j.constraints)),
    el("td", {}, est));
  if (state.role === "operator") {
    const actions = el("div", { class: "actions" });
    const path = "/api/jobs/" + encodeURIComponent(j.id);
    if (!FINISHED.includes(j.state)) {
      if (j.state === "held")
        actions.append(el("button", { class: "action", dataset: { action: "release" },
          onclick: (e) => act("Release " + j.name, "POST", path + "/release", undefined, e.target) }, "Release"));
      else
        actions.append(el("button", { class: "action", dataset: { action: "hold" },
          onclick: (e) => act("Hold " + j.name, "POST", path + "/hold", undefined, e.target) }, "Hold"));
      actions.append(el("button", { class: "action", dataset: { action: "priority" },
        onclick: (e) => {
          const v = prompt("New priority for " + j.name, String(j.priority));
          if (v !== null) act("Priority of " + j.name, "POST", path + "/priority", form({ priority: v.trim() }), e.target);
        } }, "Priority…"));
      actions.append(el("button", { class: "action", dataset: { action: "cancel" },
        onclick: (e) => {
          if (confirm("Cancel " + j.name + "? Prints running now finish.")) act("Cancel " + j.name, "POST", path + "/cancel", undefined, e.target);
        } }, "Cancel"));
    }
    tr.append(el("td", { class: "op-only" }, actions));
  }
  return tr;
}

function renderJobs() {
  const showAll = $("#show-finished").checked;
  const jobs = state.jobs.filter((j) => showAll || !FINISHED.includes(j.state));
  jobs.sort((a, b) => b.priority - a.priority || a.created_unix_ms - b.created_unix_ms);
  $("#jobs tbody").replaceChildren(...jobs.map(jobRow));
  let rem = 0, pr = 0, done = 0;
  for (const j of state.jobs) {
    if (!FINISHED.includes(j.state)) rem += Math.max(0, j.count - j.succeeded - j.in_progress);
    pr += j.in_progress; done += j.succeeded;
  }
  $("#queue-counts").textContent = rem + " remaining · " + pr + " printing · " + done + " done";
}
$("#show-finished").addEventListener("change", renderJobs);

async function refresh() {
  if (!state.role) return;
  try {
    const [p, j] = await Promise.all([api("GET", "/api/printers"), api("GET", "/api/jobs")]);
    state.printers = p.printers;
    state.jobs = j.jobs;
    state.bundles = j.bundles || {};
    renderPrinters();
    renderJobs();
    if (state.view === "health") refreshHealth();
    // Progress is not an event: poll while something prints.
    clearTimeout(state.pollTimer);
    if (state.printers.some((x) => x.state === "printing"))
      state.pollTimer = setTimeout(refresh, 2000);
  } catch (e) {
    if (e.status !== 401) toast("Could not load the farm: " + e.message, false);
  }
}

function scheduleRefresh(ms) {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refresh, ms === undefined ? 250 : ms);
}

async function refreshHealth() {
  try {
    const h = await api("GET", "/api/health");
    $("#leader").textContent = h.scheduler.ok ? "Leader: " + h.scheduler.leader
      : "Scheduler unreachable: " + h.scheduler.error;
    const body = $("#instances tbody");
    if (!h.discovery) {
      body.replaceChildren();
      $("#instances-note").textContent = "pf-web runs without --discovery: no instance list.";
    } else if (h.discovery.error) {
      body.replaceChildren();
      $("#instances-note").textContent = "Discovery: " + h.discovery.error;
    } else {
      $("#instances-note").textContent = "";
      body.replaceChildren(...(h.discovery.instances || []).map((s) => el("tr", {},
        el("td", {}, s.instance.kind), el("td", {}, s.instance.id), el("td", {}, s.instance.address),
        el("td", {}, s.health + (s.probe_error ? " (" + s.probe_error + ")" : "")),
        el("td", {}, (s.instance.labels || []).map((l) => l.key + "=" + l.value).join(" ")))));
    }
  } catch (e) {
    if (e.status !== 401) $("#leader").textContent = "Health unavailable: " + e.message;
  }
}

// ------------------------------------------------------------ events

function renderEvents() {
  const f = $("#event-filter").value.trim().toLowerCase();
  const items = state.events.filter((e) => !f || JSON.stringify(e).toLowerCase().includes(f));
  $("#events").replaceChildren(...items.slice(-300).reverse().map((e) => el("li", { dataset: { seq: e.seq } },
    el("span", { class: "muted" }, new Date(e.time_unix_ms).toLocaleTimeString() + " "),
    el("span", { class: "kind" }, e.kind + " "), e.text || "")));
}
$("#event-filter").addEventListener("input", renderEvents);

function setLive(up, msg) {
  const l = $("#live");
  l.className = "live " + (up ? "up" : "down");
  l.textContent = up ? "live" : "reconnecting";
  l.title = msg || "";
}

function startLive() {
  stopLive();
  const es = new EventSource("/api/events");
  state.es = es;
  es.addEventListener("farm", (m) => {
    const e = JSON.parse(m.data);
    state.events.push(e);
    if (state.events.length > 1000) state.events.splice(0, state.events.length - 1000);
    renderEvents();
    scheduleRefresh();
  });
  es.addEventListener("status", (m) => {
    const s = JSON.parse(m.data);
    setLive(s.state === "live", s.message);
    if (s.state === "live" || s.state === "reset") scheduleRefresh(0);
  });
  es.onerror = () => {
    setLive(false, "event stream interrupted");
    // The browser reconnects by itself with Last-Event-ID; a logged-out
    // session ends up with a 401, which closes the stream for good.
    if (es.readyState === EventSource.CLOSED) setTimeout(() => { if (state.role) checkSession(); }, 2000);
  };
}

function stopLive() {
  if (state.es) state.es.close();
  state.es = null;
  clearTimeout(state.pollTimer);
}

async function checkSession() {
  try {
    const s = await api("GET", "/api/session");
    showApp(s.role);
  } catch (e) {
    showLogin(e.status === 401 ? "" : e.message);
  }
}

// ------------------------------------------------------------ submit

$("#add-profile").addEventListener("click", () => {
  const row = document.querySelector(".gcode-row").cloneNode(true);
  for (const i of row.querySelectorAll("input")) i.value = "";
  $("#gcode-rows").append(row);
});

$("#submit-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const data = new FormData();
  for (const row of f.querySelectorAll(".gcode-row")) {
    const profile = row.querySelector(".profile").value.trim();
    const file = row.querySelector(".gcode").files[0];
    if (!profile || !file) continue;
    data.append("gcode:" + profile, file, file.name);
  }
  for (const n of ["name", "count", "priority", "material", "colour"]) data.append(n, f.elements[n].value.trim());
  if (f.elements.hold.checked) data.append("hold", "1");
  const button = $("#submit-button");
  button.disabled = true;
  try {
    const r = await api("POST", "/api/jobs", data);
    toast("Queued " + r.job.name + " (" + r.job.id + ")", true);
    f.reset();
    scheduleRefresh(0);
  } catch (e) {
    toast("Submit failed: " + e.message, false);
  } finally {
    button.disabled = false;
  }
});

checkSession();
