// asm inspector: a page over the asm serve API. No build step, no dependency, no CDN.
// Everything shown is set with textContent, never as HTML, so no stored text can run as code.
// The live event log reads the SSE endpoint with fetch (not EventSource) so the API key travels
// in the Authorization header, never in a URL that logs or history could keep.
"use strict";

const PAGE = 50;
const DECISION_TYPES = new Set([
  "routing_decided", "capability_degraded", "history_downgraded", "provider_attempt_failed",
  "retry_scheduled", "provider_failover", "provider_skipped", "breaker_state_changed", "error_occurred",
]);
const RUN_END = new Set(["run_completed", "run_failed", "run_cancelled", "run_timed_out"]);

const state = {
  key: sessionStorage.getItem("asm-key") || "",
  offset: 0,
  sessions: [],
  selected: null,
  stream: null,       // AbortController of the live event stream
  lastSeq: 0,
  features: {},
  refreshRuns: null,  // debounce timer
};

const $ = (sel) => document.querySelector(sel);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function notice(text) {
  $("#notice").textContent = text || "";
}

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (state.key) headers.Authorization = "Bearer " + state.key;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET", headers,
    body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
  });
  if (response.status === 401) {
    $("#key-form").hidden = false;
    throw new Error("this server needs an API key");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = data && data.message ? `${data.code}: ${data.message}` : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return data;
}

function fmtWhen(iso) {
  // Today's times alone: the column stays narrow on a laptop screen.
  const d = new Date(iso);
  if (isNaN(d)) return iso || "";
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleDateString();
}

function fmtCost(cost) {
  return cost === null || cost === undefined ? "–" : "$" + Number(cost).toFixed(6);
}

function tokens(usage) {
  return usage ? (usage.input_tokens || 0) + (usage.output_tokens || 0) : 0;
}

function short(id) {
  return id ? id.slice(-10) : "";
}

// -- the sessions list --------------------------------------------------------------------

async function loadSessions() {
  const params = new URLSearchParams({ summary: "true", limit: String(PAGE), offset: String(state.offset) });
  for (const [name, input] of [["status", "#filter-status"], ["agent_id", "#filter-agent"], ["tag", "#filter-tag"]]) {
    const value = $(input).value.trim();
    if (value) params.set(name, value);
  }
  try {
    const page = await api("/v1/sessions?" + params);
    state.sessions = page.items;
    $("#next").disabled = page.next_offset === null;
    $("#prev").disabled = state.offset === 0;
    $("#page-info").textContent = page.items.length ? `${state.offset + 1}–${state.offset + page.items.length}` : "no sessions";
    renderSessions();
    notice("");
  } catch (err) {
    notice(err.message);
  }
}

function matches(session, query) {
  if (!query) return true;
  const s = session.summary || {};
  const hay = [session.id, session.agent_id, session.status, (session.tags || []).join(" "), s.provider, s.model,
    JSON.stringify(session.metadata || {})].join(" ").toLowerCase();
  return hay.includes(query.toLowerCase());
}

function renderSessions() {
  const body = $("#sessions tbody");
  body.replaceChildren();
  const query = $("#search").value.trim();
  for (const session of state.sessions.filter((s) => matches(s, query))) {
    const s = session.summary || {};
    const row = el("tr");
    row.dataset.id = session.id;
    if (state.selected === session.id) row.classList.add("selected");
    const idCell = el("td", session.id, "id");
    idCell.title = session.id;
    row.append(idCell, el("td", session.status, "status-" + session.status),
      el("td", session.agent_id), el("td", s.provider ? `${s.provider}${s.model ? " / " + s.model : ""}` : "–"),
      el("td", tokens(s.usage), "num"), el("td", fmtCost(s.cost), "num"), el("td", fmtWhen(s.last_activity)));
    row.addEventListener("click", () => selectSession(session.id));
    body.append(row);
  }
}

// -- one session --------------------------------------------------------------------------

async function selectSession(id) {
  if (state.stream) state.stream.abort();
  state.selected = id;
  state.lastSeq = 0;
  renderSessions();
  $("#detail").hidden = false;
  $("#events tbody").replaceChildren();
  $("#decisions").replaceChildren();
  $("#event-count").textContent = "";
  await Promise.all([loadSession(), loadRuns(), loadTranscript(), loadApprovals()]);
  follow(id);
}

async function loadSession() {
  const id = state.selected;
  try {
    const session = await api(`/v1/sessions/${encodeURIComponent(id)}`);
    if (id !== state.selected) return;
    $("#detail-title").textContent = session.id;
    const badge = $("#detail-status");
    badge.textContent = session.status;
    badge.className = "badge status-" + session.status;
    const s = session.summary;
    $("#detail-meta").textContent = `agent ${session.agent_id} · ${s.runs} runs · ${tokens(s.usage)} tokens · ` +
      `${fmtCost(s.cost)} · tags ${(session.tags || []).join(", ") || "–"} · metadata ${JSON.stringify(session.metadata)}`;
  } catch (err) {
    notice(err.message);
  }
}

async function loadRuns() {
  const id = state.selected;
  try {
    const page = await api(`/v1/sessions/${encodeURIComponent(id)}/runs?limit=200`);
    if (id !== state.selected) return;
    const body = $("#runs tbody");
    body.replaceChildren();
    for (const run of page.items) {
      const row = el("tr");
      row.dataset.run = run.id;
      const error = run.error ? `${run.error.code}: ${run.error.message}` : "";
      row.append(el("td", short(run.id), "id"), el("td", run.status, "status-" + run.status),
        el("td", [run.provider, run.model].filter(Boolean).join(" / ") || "–"),
        el("td", run.usage.input_tokens, "num"), el("td", run.usage.output_tokens, "num"),
        el("td", fmtCost(run.cost), "num"), el("td", error));
      const cell = el("td");
      if (run.status === "pending" || run.status === "running") {
        const button = el("button", "cancel", "danger");
        button.type = "button";
        button.addEventListener("click", () => cancelRun(run.id));
        cell.append(button);
      }
      row.append(cell);
      body.append(row);
    }
  } catch (err) {
    notice(err.message);
  }
}

async function loadTranscript() {
  const id = state.selected;
  try {
    const data = await api(`/v1/sessions/${encodeURIComponent(id)}/transcript`);
    if (id !== state.selected) return;
    const box = $("#transcript");
    box.replaceChildren();
    for (const message of data.messages) {
      const node = el("div", null, "msg " + message.role);
      node.append(el("span", message.role, "role"));
      for (const block of message.content) {
        if (block.type === "text") node.append(document.createTextNode(block.text));
        else if (block.type === "tool_use") node.append(el("div", `→ tool ${block.name} ${JSON.stringify(block.input)}`));
        else if (block.type === "tool_result") node.append(el("div", `← result ${JSON.stringify(block.content)}`));
        else node.append(el("div", `[${block.type}]`, "muted"));
      }
      box.append(node);
    }
  } catch (err) {
    notice(err.message);
  }
}

async function loadApprovals() {
  const box = $("#approvals");
  box.replaceChildren();
  if (!state.features.approvals) return;
  try {
    const data = await api(`/v1/sessions/${encodeURIComponent(state.selected)}/approvals`);
    if (data.items.length) box.append(el("h3", "Tool calls waiting for approval"));
    for (const item of data.items) {
      const row = el("div", null, "approval");
      row.append(el("span", `${item.name || "tool"} ${JSON.stringify(item.input || {})}`));
      for (const verb of ["approve", "deny"]) {
        const button = el("button", verb, verb === "deny" ? "danger" : "");
        button.type = "button";
        button.addEventListener("click", async () => {
          try {
            await api(`/v1/runs/${encodeURIComponent(item.run_id)}/approvals/${encodeURIComponent(item.call_id)}/${verb}`,
              { method: "POST", body: {} });
            loadApprovals();
          } catch (err) { notice(err.message); }
        });
        row.append(button);
      }
      box.append(row);
    }
  } catch (err) {
    notice(err.message);
  }
}

async function cancelRun(runId) {
  try {
    await api(`/v1/runs/${encodeURIComponent(runId)}/cancel`, { method: "POST", body: { reason: "cancelled in the inspector" } });
    loadRuns();
  } catch (err) {
    notice(err.message);
  }
}

function summarize(event) {
  const p = event.payload || {};
  if (event.type === "message_streamed" || event.type === "thinking_streamed") return JSON.stringify(p.text);
  if (event.type === "routing_decided") return "candidates: " + (p.candidates || []).join(", ");
  if (event.type === "run_completed") return `${p.stop_reason}: ${JSON.stringify((p.output || "").slice(0, 80))}`;
  if (p.error) return `${p.error.code}: ${p.error.message}`;
  if (p.usage) return `in=${p.usage.input_tokens} out=${p.usage.output_tokens}` + (p.cost != null ? ` cost=${fmtCost(p.cost)}` : "");
  if (p.message && p.message.content) return JSON.stringify(p.message.content.filter((b) => b.type === "text").map((b) => b.text).join(""));
  return Object.entries(p).filter(([, v]) => v !== null && typeof v !== "object").map(([k, v]) => `${k}=${v}`).join(", ");
}

function addEvent(event) {
  if (event.seq <= state.lastSeq) return;  // the stream never repeats one; this guards a re-render
  state.lastSeq = event.seq;
  const row = el("tr");
  row.dataset.seq = event.seq;
  row.dataset.type = event.type;
  row.append(el("td", event.seq, "num"), el("td", new Date(event.timestamp).toLocaleTimeString()),
    el("td", event.type), el("td", short(event.run_id), "id"), el("td", summarize(event)));
  const body = $("#events tbody");
  body.append(row);
  body.scrollTop = body.scrollHeight;
  $("#event-count").textContent = `(${body.children.length} events, last seq ${event.seq})`;
  if (DECISION_TYPES.has(event.type) || event.type.startsWith("policy") || event.type.includes("approval") ||
      event.type.includes("budget")) {
    $("#decisions").append(el("li", `#${event.seq} ${event.type}: ${summarize(event)}`));
  }
  if (event.type === "run_started" || RUN_END.has(event.type) || event.type.startsWith("session_")) {
    clearTimeout(state.refreshRuns);
    state.refreshRuns = setTimeout(() => { loadRuns(); loadSession(); loadTranscript(); loadApprovals(); loadSessions(); }, 150);
  }
}

function live(text, cls) {
  const badge = $("#live");
  badge.textContent = text;
  badge.className = "badge " + cls;
}

// The event log, replayed then live; on a dropped connection it resumes with Last-Event-ID.
async function follow(id) {
  const controller = new AbortController();
  state.stream = controller;
  let delay = 500;
  while (!controller.signal.aborted && state.selected === id) {
    try {
      const headers = { Accept: "text/event-stream", "Last-Event-ID": String(state.lastSeq) };
      if (state.key) headers.Authorization = "Bearer " + state.key;
      const response = await fetch(`/v1/sessions/${encodeURIComponent(id)}/events/stream`, { headers, signal: controller.signal });
      if (!response.ok) throw new Error(`event stream: HTTP ${response.status}`);
      live("live", "live-on");
      delay = 500;
      await readStream(response.body, controller);
    } catch (err) {
      if (controller.signal.aborted) return;
      notice(err.message);
    }
    live("reconnecting", "live-retry");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 5000);
  }
}

async function readStream(body, controller) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  let name = "message";
  while (!controller.signal.aborted) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split(/\r\n|\n|\r/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (data.length && name === "message") addEvent(JSON.parse(data.join("\n")));
        else if (data.length && name === "close") live("closed: " + JSON.parse(data.join("\n")).reason, "live-off");
        data = [];
        name = "message";
      } else if (line.startsWith(":")) {
        continue;
      } else {
        const at = line.indexOf(":");
        const field = at < 0 ? line : line.slice(0, at);
        let value = at < 0 ? "" : line.slice(at + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "event") name = value;
      }
    }
  }
}

// -- wiring -------------------------------------------------------------------------------

async function start() {
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.key = $("#key-input").value.trim();
    sessionStorage.setItem("asm-key", state.key);
    location.reload();
  });
  try {
    const info = await api("/v1/server");
    state.features = info.features || {};
    $("#server-info").textContent = `asm-serve ${info.version} · key ${info.key}` + (info.operator ? " (operator)" : "");
  } catch (err) {
    notice(err.message);
    return;
  }
  for (const sel of ["#filter-status", "#filter-agent", "#filter-tag"]) {
    $(sel).addEventListener("change", () => { state.offset = 0; loadSessions(); });
  }
  $("#search").addEventListener("input", renderSessions);
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); loadSessions(); });
  $("#next").addEventListener("click", () => { state.offset += PAGE; loadSessions(); });
  $("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadSessions(); });
  $("#prompt-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("#prompt").value;
    if (!text.trim() || !state.selected) return;
    try {
      await api(`/v1/sessions/${encodeURIComponent(state.selected)}/runs`, { method: "POST", body: { input: text } });
      $("#prompt").value = "";
    } catch (err) { notice(err.message); }
  });
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", async () => {
      try {
        await api(`/v1/sessions/${encodeURIComponent(state.selected)}/${button.dataset.action}`, { method: "POST", body: {} });
        loadSession();
        loadSessions();
      } catch (err) { notice(err.message); }
    });
  }
  await loadSessions();
  setInterval(loadSessions, 5000);
}

document.addEventListener("DOMContentLoaded", start, { once: true });
