// agentd dashboard: a small single-page app over agentd's own HTTP API.
// No framework, no build step, no external asset: served by agentd itself.
// Auth: an HttpOnly SameSite=Strict session cookie issued by /ui/login;
// every state-changing request carries the CSRF token in X-CSRF-Token.
"use strict";

const state = { me: null, csrf: null, stream: null, timers: [], flash: null };
const $ = (sel, root = document) => root.querySelector(sel);
const main = () => $("#main");

// ---- DOM helpers -----------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
function field(label, input, hint) {
  const id = input.id || "f-" + Math.random().toString(36).slice(2);
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", {}, hint) : null);
}
function fmtTime(s) { return s ? new Date(s).toLocaleString() : "—"; }
function fmtCost(u) { return u ? `$${(u.cost_usd || 0).toFixed(6)}` : "$0"; }
function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const u = ["B", "KiB", "MiB", "GiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}
function setTitle(t) { document.title = `${t} · agentd`; }

// ---- API -------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `request failed (${status})`);
    this.status = status; this.field = body && body.error && body.error.field; this.code = body && body.error && body.error.code;
  }
}
async function api(method, path, body, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (state.csrf && method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) payload = body;
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
  let r;
  try {
    r = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  } catch (e) {
    throw new ApiError(0, { error: { message: `agentd did not answer (${e.message}); is it running and reachable?` } });
  }
  if (r.status === 401 && !opts.noRedirect) { signedOut("Your session ended (signed out, or the key was revoked)."); throw new ApiError(401, null); }
  if (opts.raw) { if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null)); return r; }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { throw new ApiError(r.status, { error: { message: `unexpected answer from agentd (HTTP ${r.status})` } }); }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

// ---- notices ---------------------------------------------------------------
function notice(msg, kind = "error") {
  const box = $("#notice");
  box.className = `notice ${kind}`;
  box.textContent = msg;
  box.hidden = false;
  box.focus();
}
function clearNotice() { $("#notice").hidden = true; }
// A notice that must outlive a change of page (shown once the next page is drawn).
function go(hash, message, kind = "ok") {
  state.flash = message ? { message, kind } : null;
  if (location.hash === hash) route(); else location.hash = hash;
}
function formError(form, e) {
  form.querySelectorAll("[aria-invalid]").forEach(el => el.removeAttribute("aria-invalid"));
  const msg = form.querySelector(".form-error");
  msg.textContent = e.message;
  msg.hidden = false;
  if (e.field) {
    const el = form.querySelector(`[name="${e.field.split(".").pop()}"]`) || form.querySelector(`[name="${e.field}"]`);
    if (el) { el.setAttribute("aria-invalid", "true"); el.focus(); }
  }
}

// ---- session (sign in/out) ---------------------------------------------------
async function whoami() {
  try {
    const r = await api("GET", "/ui/session", undefined, { noRedirect: true });
    state.me = r.identity; state.csrf = r.csrf; return true;
  } catch { return false; }
}
function signedOut(message) {
  state.me = null; state.csrf = null;
  stopStreams();
  renderNav();
  go("#/login", message, "info");
}
function viewLogin() {
  setTitle("Sign in");
  const key = h("input", { name: "key", type: "password", autocomplete: "current-password", required: true, spellcheck: "false" });
  const form = h("form", { class: "card narrow", "aria-labelledby": "login-title", onsubmit: async ev => {
    ev.preventDefault();
    try {
      const r = await api("POST", "/ui/login", { key: key.value.trim() }, { noRedirect: true });
      state.me = r.identity; state.csrf = r.csrf;
      renderNav();
      location.hash = "#/";
    } catch (e) { formError(form, e); }
  } },
    h("h1", { id: "login-title" }, "Sign in to agentd"),
    h("p", {}, "Use an API key (agentctl keys create, or the admin key in the state directory). It is kept in an HttpOnly session cookie, never in the page."),
    field("API key", key),
    h("p", { class: "form-error", role: "alert", hidden: true }),
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  main().replaceChildren(form);
  key.focus();
}

// ---- navigation ---------------------------------------------------------------
function renderNav() {
  const nav = $("#nav");
  if (!state.me) { nav.replaceChildren(); return; }
  // The same roles as the API: secrets are listed by members, keys by owners.
  const links = [["#/", "Overview"], ["#/agents", "Agents"], ["#/sessions", "Sessions"]];
  if (can("member")) links.push(["#/secrets", "Secrets"]);
  if (can("owner")) links.push(["#/keys", "API keys"]);
  if (state.me.role === "admin") links.push(["#/teams", "Teams"]);
  else links.push([`#/teams/${encodeURIComponent(state.me.team_id)}`, "Team"]);
  nav.replaceChildren(
    h("ul", {}, links.map(([href, label]) => h("li", {}, h("a", { href, "data-nav": href }, label)))),
    h("div", { class: "who" },
      h("span", {}, `${state.me.team_name || state.me.team_id} · ${state.me.role}`),
      h("button", { type: "button", onclick: async () => { await api("POST", "/ui/logout", {}, { noRedirect: true }).catch(() => {}); signedOut("Signed out."); } }, "Sign out")));
  markNav();
}
function markNav() {
  document.querySelectorAll("[data-nav]").forEach(a => {
    const here = location.hash || "#/";
    const active = a.dataset.nav === "#/" ? here === "#/" : here.startsWith(a.dataset.nav);
    if (active) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
}
function stopStreams() {
  if (state.stream) { state.stream.close(); state.stream = null; }
  state.timers.forEach(clearInterval); state.timers = [];
}
const can = role => ({ viewer: 0, member: 1, owner: 2, admin: 3 })[state.me.role] >= ({ viewer: 0, member: 1, owner: 2, admin: 3 })[role];

async function route() {
  stopStreams();
  clearNotice();
  const flash = state.flash; state.flash = null;
  if (flash) setTimeout(() => notice(flash.message, flash.kind), 0);
  if (!state.me) { if (!(await whoami())) return viewLogin(); renderNav(); }
  markNav();
  // "#/sessions/ID" or "#/sessions?agent=..": the query is read by the view.
  const parts = (location.hash || "#/").slice(2).split("?")[0].split("/").map(decodeURIComponent);
  try {
    switch (parts[0]) {
      case "": return await viewOverview();
      case "login": return viewLogin();
      case "agents": return parts[1] ? await viewAgentForm(parts[1]) : await viewAgents();
      case "sessions": return parts[1] ? await viewSession(parts[1]) : await viewSessions();
      case "secrets": return await viewSecrets();
      case "keys": return await viewKeys();
      case "teams": return parts[1] ? await viewTeam(parts[1]) : await viewTeams();
      default: main().replaceChildren(h("h1", {}, "Not found"), h("p", {}, "There is no such page."));
    }
  } catch (e) {
    if (e.status === 401) return;
    main().replaceChildren(h("h1", {}, "Something went wrong"), h("p", { class: "notice error", role: "alert" }, e.message));
  }
}

// ---- overview --------------------------------------------------------------------
async function viewOverview() {
  setTitle("Overview");
  const [st, failed] = await Promise.all([api("GET", "/v1/status"), api("GET", "/v1/runs?state=failed&limit=10")]);
  const stat = (label, value) => h("div", { class: "stat" }, h("span", { class: "value" }, value), h("span", { class: "label" }, label));
  main().replaceChildren(
    h("h1", {}, "Overview"),
    h("section", { class: "stats", "aria-label": "Activity" },
      stat("sandboxes running", st.sandboxes_running), stat("runs active", st.runs_active), stat("runs queued", st.runs_queued)),
    h("section", { class: "card" }, h("h2", {}, "Host limits in force"),
      h("dl", {},
        h("dt", {}, "agentd"), h("dd", {}, st.version),
        h("dt", {}, "cgroup driver"), h("dd", {}, st.cgroup_driver),
        h("dt", {}, "seccomp"), h("dd", {}, st.seccomp),
        h("dt", {}, "sandbox images"), h("dd", {}, (st.images || []).join(", ") || "none"),
        h("dt", {}, "model gateway"), h("dd", { id: "gateway" }, st.gateway || "not configured")),
      (st.notes || []).length ? h("ul", { class: "notes" }, st.notes.map(n => h("li", {}, n))) : null),
    h("section", { class: "card" }, h("h2", {}, "Recent failures"),
      failed.data.length ? table(["Run", "Session", "Ended", "Reason"], failed.data.map(r => [
        r.id, h("a", { href: `#/sessions/${r.session_id}` }, r.session_id), fmtTime(r.finished_at), r.error || ""]))
        : h("p", {}, "No failed runs.")));
}
function table(headers, rows, caption) {
  return h("div", { class: "table-wrap" }, h("table", {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, headers.map(x => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map(r => h("tr", {}, r.map(c => h("td", {}, c)))))));
}

// ---- agents ----------------------------------------------------------------------
async function viewAgents() {
  setTitle("Agents");
  const list = await api("GET", "/v1/agents");
  main().replaceChildren(
    h("div", { class: "title-row" }, h("h1", {}, "Agents"),
      can("owner") ? h("a", { class: "button primary", href: "#/agents/new" }, "New agent") : null),
    list.data.length ? table(["Name", "Model", "Image", "Tools", ""], list.data.map(a => [
      h("a", { href: `#/agents/${a.id}` }, a.name), a.model, a.sandbox.image, a.tools.join(", "),
      h("a", { href: `#/sessions?agent=${a.id}` }, "sessions")])) : h("p", {}, "No agents yet."));
}
async function viewAgentForm(id) {
  const isNew = id === "new";
  const [agent, st] = await Promise.all([isNew ? null : api("GET", `/v1/agents/${id}`), api("GET", "/v1/status")]);
  setTitle(isNew ? "New agent" : agent.name);
  const a = agent || { name: "", model: "", system_prompt: "", tools: ["exec", "read_file", "write_file", "list_files", "edit_file"], sandbox: { image: "default" } };
  const inp = (name, value, type = "text", extra = {}) => h("input", Object.assign({ name, type, value: value ?? "" }, extra));
  const image = h("select", { name: "image" }, (st.images || []).map(i => h("option", { value: i, selected: i === a.sandbox.image }, i)));
  const tools = ["exec", "read_file", "write_file", "list_files", "edit_file"].map(t =>
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "tools", value: t, checked: a.tools.includes(t) }), t));
  const form = h("form", { class: "card", onsubmit: async ev => {
    ev.preventDefault();
    const f = new FormData(form);
    const num = k => f.get(k) === "" ? undefined : Number(f.get(k));
    const body = { name: f.get("name"), model: f.get("model"), system_prompt: f.get("system_prompt"), tools: f.getAll("tools"),
      sandbox: { image: f.get("image"), memory_mb: num("memory_mb"), cpus: num("cpus"), pids: num("pids") } };
    if (f.get("max_steps")) body.limits = { max_steps: num("max_steps") };
    try {
      const saved = isNew ? await api("POST", "/v1/agents", body) : await api("PATCH", `/v1/agents/${id}`, body);
      go(`#/agents/${saved.id}`, `Agent ${saved.name} saved.`);
    } catch (e) { formError(form, e); }
  } },
    field("Name", inp("name", a.name, "text", { required: true })),
    field("Model (at the gateway)", inp("model", a.model, "text", { required: true })),
    field("System prompt", h("textarea", { name: "system_prompt", rows: 4 }, a.system_prompt || "")),
    h("fieldset", {}, h("legend", {}, "Tools"), tools),
    h("fieldset", {}, h("legend", {}, "Sandbox"),
      field("Image", image),
      field("Memory (MiB)", inp("memory_mb", a.sandbox.memory_mb, "number", { min: 16 })),
      field("CPUs", inp("cpus", a.sandbox.cpus, "number", { step: "0.1", min: "0.01" })),
      field("Processes", inp("pids", a.sandbox.pids, "number", { min: 8 }))),
    field("Max steps per run", inp("max_steps", a.limits && a.limits.max_steps, "number", { min: 1 })),
    h("p", { class: "form-error", role: "alert", hidden: true }),
    h("div", { class: "actions" },
      can("owner") ? h("button", { type: "submit", class: "primary" }, isNew ? "Create agent" : "Save") : null,
      !isNew && can("owner") ? h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Delete agent ${a.name}?`)) return;
        try { await api("DELETE", `/v1/agents/${id}`); go("#/agents", `Agent ${a.name} deleted.`); } catch (e) { formError(form, e); }
      } }, "Delete") : null,
      !isNew ? h("a", { class: "button", href: `#/sessions?agent=${id}` }, "Sessions") : null));
  main().replaceChildren(h("h1", {}, isNew ? "New agent" : `Agent ${a.name}`), form);
}

// ---- sessions ----------------------------------------------------------------------
async function viewSessions() {
  setTitle("Sessions");
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const agents = (await api("GET", "/v1/agents")).data;
  const q = new URLSearchParams({ limit: "25" });
  for (const k of ["agent_id", "status", "q", "cursor"]) if (params.get(k === "agent_id" ? "agent" : k)) q.set(k, params.get(k === "agent_id" ? "agent" : k));
  const page = await api("GET", `/v1/sessions?${q}`);
  const agentName = id => (agents.find(a => a.id === id) || {}).name || id;
  const filter = h("form", { class: "filters", role: "search", onsubmit: ev => {
    ev.preventDefault();
    const f = new FormData(filter), p = new URLSearchParams();
    for (const [k, v] of f) if (v) p.set(k, v);
    location.hash = `#/sessions?${p}`;
  } },
    field("Agent", h("select", { name: "agent" }, h("option", { value: "" }, "all"), agents.map(a => h("option", { value: a.id, selected: params.get("agent") === a.id }, a.name)))),
    field("Status", h("select", { name: "status" }, ["", "idle", "queued", "running"].map(s => h("option", { value: s, selected: params.get("status") === s }, s || "all")))),
    field("Title contains", h("input", { name: "q", type: "search", value: params.get("q") || "" })),
    h("button", { type: "submit" }, "Filter"));
  const create = can("member") && agents.length ? h("form", { class: "inline", onsubmit: async ev => {
    ev.preventDefault();
    const f = new FormData(create);
    try {
      const s = await api("POST", "/v1/sessions", { agent_id: f.get("agent_id"), title: f.get("title") || undefined });
      location.hash = `#/sessions/${s.id}`;
    } catch (e) { formError(create, e); }
  } },
    field("Agent", h("select", { name: "agent_id" }, agents.map(a => h("option", { value: a.id }, a.name)))),
    field("Title", h("input", { name: "title", type: "text" })),
    h("button", { type: "submit", class: "primary" }, "Start session"),
    h("p", { class: "form-error", role: "alert", hidden: true })) : null;
  const next = new URLSearchParams(params); if (page.next_cursor) next.set("cursor", page.next_cursor);
  main().replaceChildren(
    h("h1", {}, "Sessions"), create ? h("section", { class: "card" }, h("h2", {}, "New session"), create) : null,
    filter,
    page.data.length ? table(["Title", "Agent", "Status", "Sandbox", "Cost", "Created"], page.data.map(s => [
      h("a", { href: `#/sessions/${s.id}` }, s.title || s.id), agentName(s.agent_id), s.status, s.sandbox_state, fmtCost(s.usage), fmtTime(s.created_at)]))
      : h("p", {}, "No sessions match."),
    h("nav", { class: "pager", "aria-label": "Pages" },
      params.get("cursor") ? h("a", { class: "button", href: "#/sessions" }, "First page") : null,
      page.next_cursor ? h("a", { class: "button", href: `#/sessions?${next}` }, "Next page") : null));
}

async function viewSession(id) {
  const s = await api("GET", `/v1/sessions/${id}`);
  setTitle(s.title || id);
  const transcript = h("ol", { class: "transcript", "aria-live": "polite", "aria-label": "Transcript" });
  const live = h("div", { class: "assistant live", hidden: true, "aria-live": "polite" });
  const runState = h("span", { id: "run-state" }, s.status);
  const usage = h("span", { id: "usage" }, `${s.usage.prompt_tokens + s.usage.completion_tokens} tokens · ${fmtCost(s.usage)}`);
  const msg = h("textarea", { name: "content", rows: 3, required: true });
  const chat = h("form", { class: "chat", onsubmit: async ev => {
    ev.preventDefault();
    if (!msg.value.trim()) return;
    try { await api("POST", `/v1/sessions/${id}/messages`, { content: msg.value }); msg.value = ""; } catch (e) { formError(chat, e); }
  } },
    field("Message", msg),
    h("p", { class: "form-error", role: "alert", hidden: true }),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Send"),
      h("button", { type: "button", onclick: async () => { try { await api("POST", `/v1/sessions/${id}/cancel`); } catch (e) { notice(e.message); } } }, "Cancel run")));
  const sandboxPanel = h("section", { class: "card", "aria-labelledby": "sb-title" }, h("h2", { id: "sb-title" }, "Sandbox"));
  const filesPanel = h("section", { class: "card", "aria-labelledby": "files-title" }, h("h2", { id: "files-title" }, "Files"));
  const execPanel = h("section", { class: "card", "aria-labelledby": "exec-title" }, h("h2", { id: "exec-title" }, "Run a command"));
  main().replaceChildren(
    h("div", { class: "title-row" }, h("h1", {}, s.title || id),
      h("p", { class: "meta" }, "Run: ", runState, " · ", usage)),
    h("div", { class: "session-grid" },
      h("section", { class: "card convo", "aria-labelledby": "t-title" }, h("h2", { id: "t-title" }, "Transcript"), transcript, live, can("member") ? chat : null),
      h("div", { class: "side" }, sandboxPanel, can("member") ? execPanel : null, filesPanel)));

  // Live transcript: every event from the start, then new ones (SSE resumes on reconnect).
  let deltas = "";
  const es = new EventSource(`/v1/sessions/${id}/events?after=0`);
  state.stream = es;
  const add = (kind, ev) => {
    const d = ev.data || {};
    let item;
    switch (kind) {
      case "user_message": item = h("li", { class: "user" }, h("span", { class: "who" }, "You"), h("div", { class: "text" }, d.text)); break;
      case "assistant_message":
        deltas = ""; live.hidden = true; live.textContent = "";
        if (!d.text) return;
        item = h("li", { class: "assistant" }, h("span", { class: "who" }, "Agent"), h("div", { class: "text" }, d.text)); break;
      case "tool_call":
        item = h("li", { class: "tool", "data-call": d.id }, h("details", {}, h("summary", {}, `⚙ ${d.name}`, " ", h("code", {}, typeof d.arguments === "string" ? d.arguments : JSON.stringify(d.arguments).slice(0, 160))),
          h("pre", { class: "out" }, "running…"))); break;
      case "tool_result": {
        const call = transcript.querySelector(`[data-call="${CSS.escape(d.id || "")}"] pre`);
        // (The output already ends with the exit code, as the model saw it.)
        const text = d.output || "";
        const bad = d.error || (d.exit_code !== undefined && d.exit_code !== 0);
        if (call) { call.textContent = text; if (bad) call.classList.add("bad"); return; }
        item = h("li", { class: "tool" }, h("details", {}, h("summary", {}, "↳ result"), h("pre", {}, text))); break;
      }
      case "run_status":
        runState.textContent = d.state + (d.error ? `: ${d.error}` : "");
        if (["succeeded", "failed", "cancelled"].includes(d.state)) refreshUsage();
        if (d.state === "failed") item = h("li", { class: "status bad", role: "alert" }, `Run failed: ${d.error || ""}`);
        else if (d.state === "cancelled") item = h("li", { class: "status" }, "Run cancelled.");
        else return;
        break;
      case "compaction": item = h("li", { class: "status" }, "Earlier conversation compacted."); break;
      case "error": return;
      case "sandbox_status": return;
      default: return;
    }
    transcript.append(item);
    item.scrollIntoView({ block: "nearest" });
  };
  for (const kind of ["user_message", "assistant_message", "tool_call", "tool_result", "run_status", "compaction", "error", "sandbox_status"]) {
    es.addEventListener(kind, m => { add(kind, JSON.parse(m.data)); if (kind === "sandbox_status") loadSandbox(); });
  }
  es.addEventListener("assistant_delta", m => {
    const d = JSON.parse(m.data);
    deltas += d.text; live.hidden = false; live.textContent = deltas;
  });
  es.onerror = () => { runState.textContent = runState.textContent.replace(/ \(reconnecting…\)$/, "") + " (reconnecting…)"; };
  es.onopen = () => { runState.textContent = runState.textContent.replace(/ \(reconnecting…\)$/, ""); };
  async function refreshUsage() {
    const x = await api("GET", `/v1/sessions/${id}`);
    usage.textContent = `${x.usage.prompt_tokens + x.usage.completion_tokens} tokens · ${fmtCost(x.usage)}`;
  }

  async function loadSandbox() {
    const sb = await api("GET", `/v1/sessions/${id}/sandbox`);
    const l = sb.limits || {}, u = sb.usage || {};
    const act = a => h("button", { type: "button", onclick: async () => {
      try { await api("POST", `/v1/sessions/${id}/sandbox/${a}`); await loadSandbox(); } catch (e) { notice(e.message); }
    } }, a);
    sandboxPanel.replaceChildren(h("h2", { id: "sb-title" }, "Sandbox"),
      h("dl", {},
        h("dt", {}, "state"), h("dd", { id: "sandbox-state" }, sb.state),
        h("dt", {}, "image"), h("dd", {}, sb.image || "—"),
        h("dt", {}, "memory"), h("dd", {}, `${fmtBytes(u.memory_bytes)} of ${fmtBytes(l.memory_bytes)}`),
        h("dt", {}, "processes"), h("dd", {}, `${u.pids ?? "—"} of ${l.pids ?? "—"}`),
        h("dt", {}, "cpus"), h("dd", {}, `${l.cpus ?? "—"} (${u.cpu_seconds !== undefined && u.cpu_seconds !== null ? u.cpu_seconds.toFixed(2) + " s used" : "—"})`)),
      can("member") ? h("div", { class: "actions" }, ["start", "stop", "pause", "resume", "restart"].map(act)) : null);
  }
  await loadSandbox();
  state.timers.push(setInterval(() => loadSandbox().catch(() => {}), 5000));

  // Files.
  let cwd = "/workspace";
  async function loadFiles(path) {
    cwd = path;
    let entries = [];
    try { entries = await api("GET", `/v1/sessions/${id}/files?path=${encodeURIComponent(path)}`); } catch (e) { if (e.status !== 404) notice(e.message); }
    const up = path !== "/" ? h("li", {}, h("button", { type: "button", class: "link", onclick: () => loadFiles(path.replace(/\/[^/]+$/, "") || "/") }, "..")) : null;
    const upload = h("input", { type: "file", name: "upload" });
    filesPanel.replaceChildren(h("h2", { id: "files-title" }, "Files"), h("p", { class: "path" }, h("code", {}, path)),
      h("ul", { class: "files" }, up, entries.map(e => {
        const full = (path === "/" ? "" : path) + "/" + e.name;
        return h("li", {}, e.type === "directory"
          ? h("button", { type: "button", class: "link", onclick: () => loadFiles(full) }, e.name + "/")
          : h("a", { href: `/v1/sessions/${id}/files/content?path=${encodeURIComponent(full)}`, download: e.name }, e.name),
          h("small", {}, e.type === "file" ? ` ${fmtBytes(e.size)}` : ""));
      })),
      can("member") ? h("form", { class: "inline", onsubmit: async ev => {
        ev.preventDefault();
        const file = upload.files[0]; if (!file) return;
        try {
          await api("PUT", `/v1/sessions/${id}/files/content?path=${encodeURIComponent((cwd === "/" ? "" : cwd) + "/" + file.name)}`, file, { headers: { "Content-Type": "application/octet-stream" } });
          await loadFiles(cwd);
          notice(`Uploaded ${file.name}.`, "ok");
        } catch (e) { notice(e.message); }
      } }, field("Upload a file here", upload), h("button", { type: "submit" }, "Upload")) : null);
  }
  await loadFiles(cwd);

  // Command box: the output streams in as it comes.
  if (can("member")) {
    const cmd = h("input", { name: "command", type: "text", required: true, spellcheck: "false", autocomplete: "off" });
    const out = h("pre", { class: "out", id: "exec-output", "aria-live": "polite" });
    const form = h("form", { class: "inline", onsubmit: async ev => {
      ev.preventDefault();
      out.textContent = ""; out.classList.remove("bad");
      try {
        const r = await api("POST", `/v1/sessions/${id}/exec`, { command: cmd.value }, { raw: true, headers: { Accept: "text/event-stream" } });
        const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const frame = buf.slice(0, i); buf = buf.slice(i + 2);
            let event = "message", data = "";
            for (const line of frame.split("\n")) {
              if (line.startsWith("event:")) event = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).trimStart();
            }
            if (!data) continue;
            const d = JSON.parse(data);
            if (event === "stdout" || event === "stderr") out.append(d.data);
            else if (event === "exit") { out.append(`\n[exit ${d.exit_code}${d.timed_out ? ", timed out" : ""}]`); if (d.exit_code) out.classList.add("bad"); loadFiles(cwd); }
            else if (event === "error") { out.append(`\n[error: ${d.message || ""}]`); out.classList.add("bad"); }
          }
        }
      } catch (e) { out.textContent = e.message; out.classList.add("bad"); }
    } }, field("Command (run by /bin/sh in /workspace)", cmd), h("button", { type: "submit" }, "Run"));
    execPanel.append(form, out);
  }
}

// ---- secrets, keys, teams ------------------------------------------------------------
async function viewSecrets() {
  setTitle("Secrets");
  const [list, agents] = await Promise.all([api("GET", "/v1/secrets"), api("GET", "/v1/agents")]);
  const form = h("form", { class: "card", onsubmit: async ev => {
    ev.preventDefault();
    const f = new FormData(form);
    try {
      await api("PUT", `/v1/secrets/${encodeURIComponent(f.get("name"))}`, { value: f.get("value"), agent_id: f.get("agent_id") || undefined });
      notice(`Secret ${f.get("name")} set.`, "ok"); await viewSecrets();
    } catch (e) { formError(form, e); }
  } },
    h("h2", {}, "Set a secret"),
    h("p", {}, "Values are write-only: encrypted at rest, injected as environment variables into the sandboxes of this team (or one agent), never shown again."),
    field("Name", h("input", { name: "name", type: "text", required: true, pattern: "[A-Za-z_][A-Za-z0-9_]*" })),
    field("Value", h("input", { name: "value", type: "password", required: true, autocomplete: "off" })),
    field("Only for agent", h("select", { name: "agent_id" }, h("option", { value: "" }, "the whole team"), agents.data.map(a => h("option", { value: a.id }, a.name)))),
    h("p", { class: "form-error", role: "alert", hidden: true }),
    h("button", { type: "submit", class: "primary" }, "Set secret"));
  main().replaceChildren(h("h1", {}, "Secrets"),
    list.data.length ? table(["Name", "Scope", "Updated", ""], list.data.map(s => [s.name, s.agent_id ? `agent ${s.agent_id}` : "team", fmtTime(s.updated_at),
      can("owner") ? h("button", { type: "button", class: "danger", onclick: async () => {
        try { await api("DELETE", `/v1/secrets/${encodeURIComponent(s.name)}${s.agent_id ? `?agent_id=${s.agent_id}` : ""}`); await viewSecrets(); } catch (e) { notice(e.message); }
      } }, "Delete") : ""])) : h("p", {}, "No secrets."),
    can("owner") ? form : null);
}
async function viewKeys() {
  setTitle("API keys");
  const list = await api("GET", "/v1/keys");
  const shown = h("div", { id: "new-key", "aria-live": "polite" });
  const form = h("form", { class: "card", onsubmit: async ev => {
    ev.preventDefault();
    const f = new FormData(form);
    try {
      const k = await api("POST", "/v1/keys", { name: f.get("name"), role: f.get("role") });
      await viewKeys();
      $("#new-key").replaceChildren(h("div", { class: "notice ok" }, h("p", {}, `Key ${k.name} created. Copy it now: it is shown only once.`), h("code", { class: "secret", id: "created-key" }, k.key)));
    } catch (e) { formError(form, e); }
  } },
    h("h2", {}, "Create a key"),
    field("Name", h("input", { name: "name", type: "text", required: true })),
    field("Role", h("select", { name: "role" }, ["viewer", "member", "owner"].concat(state.me.role === "admin" ? ["admin"] : []).map(r => h("option", { value: r }, r)))),
    h("p", { class: "form-error", role: "alert", hidden: true }),
    h("button", { type: "submit", class: "primary" }, "Create key"));
  main().replaceChildren(h("h1", {}, "API keys"), shown,
    table(["Name", "Role", "Prefix", "Created", "Last used", ""], list.data.map(k => [k.name, k.role, h("code", {}, k.prefix), fmtTime(k.created_at), fmtTime(k.last_used_at),
      k.revoked_at ? "revoked" : can("owner") ? h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Revoke key ${k.name}? It stops working at once.`)) return;
        try { await api("DELETE", `/v1/keys/${k.id}`); await viewKeys(); } catch (e) { notice(e.message); }
      } }, "Revoke") : ""])),
    can("owner") ? form : null);
}
async function viewTeams() {
  setTitle("Teams");
  const list = await api("GET", "/v1/teams");
  const form = h("form", { class: "card", onsubmit: async ev => {
    ev.preventDefault();
    try { await api("POST", "/v1/teams", { name: new FormData(form).get("name") }); await viewTeams(); } catch (e) { formError(form, e); }
  } }, h("h2", {}, "Create a team"), field("Name", h("input", { name: "name", type: "text", required: true })),
    h("p", { class: "form-error", role: "alert", hidden: true }), h("button", { type: "submit", class: "primary" }, "Create team"));
  main().replaceChildren(h("h1", {}, "Teams"), table(["Name", "Id", "Created"], list.data.map(t => [
    h("a", { href: `#/teams/${encodeURIComponent(t.id)}` }, t.name), h("code", {}, t.id), fmtTime(t.created_at)])),
    state.me.role === "admin" ? form : null);
}
// A team's quotas beside what it uses now; admins change them.
const QUOTAS = [
  ["sessions", "Sessions", "sessions that exist"],
  ["running_sandboxes", "Running sandboxes", "running or paused at once"],
  ["concurrent_runs", "Concurrent runs", "worked on at once; more wait in the queue"],
  ["queued_runs", "Queued runs", "waiting in the queue"],
  ["memory_mb", "Memory (MiB)", "of the running sandboxes, summed"],
  ["cpus", "CPUs", "of the running sandboxes, summed"],
];
async function viewTeam(id) {
  const t = await api("GET", `/v1/teams/${encodeURIComponent(id)}`);
  setTitle(`Team ${t.name}`);
  const q = t.quotas || {}, u = t.usage || {};
  const rows = QUOTAS.map(([k, label, hint]) => [label, String(u[k] ?? "—"), q[k] == null ? "no limit" : String(q[k]), hint]);
  const form = h("form", { class: "card", id: "quota-form", onsubmit: async ev => {
    ev.preventDefault();
    const data = new FormData(form), quotas = {};
    for (const [k] of QUOTAS) {
      const v = String(data.get(k) || "").trim();
      if (v !== "") quotas[k] = Number(v);
    }
    try {
      await api("PATCH", `/v1/teams/${encodeURIComponent(t.id)}`, { quotas });
      state.flash = { message: "Quotas saved.", kind: "ok" };
      await route();
    } catch (e) { formError(form, e); }
  } }, h("h2", {}, "Quotas"), h("p", {}, "Leave a field empty for no limit."),
    QUOTAS.map(([k, label]) => field(label, h("input", { name: k, type: "number", min: "0", step: k === "cpus" ? "0.01" : "1",
      value: q[k] == null ? "" : String(q[k]) }))),
    h("p", { class: "form-error", role: "alert", hidden: true }), h("button", { type: "submit", class: "primary" }, "Save quotas"));
  main().replaceChildren(h("h1", {}, `Team ${t.name}`), h("p", {}, h("code", {}, t.id)),
    table(["Quota", "Used", "Limit", ""], rows, "Quotas and usage"),
    state.me.role === "admin" ? form : null);
}

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", ev => { if (!(ev.reason instanceof ApiError && ev.reason.status === 401)) notice(String(ev.reason && ev.reason.message || ev.reason)); });
document.addEventListener("DOMContentLoaded", route);
