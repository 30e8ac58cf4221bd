// The convhook dashboard: plain DOM, no framework. Everything the API returns is written with
// textContent (never as HTML), and every request goes to this page's own origin.
"use strict";

const KEY = "convhook.key";
// convhook's own events about delivery: their subject is an endpoint, not a conversation.
const OPERATIONAL_TYPES = ["endpoint.disabled", "endpoint.enabled", "endpoint.recovered", "delivery.failed"];
const EVENT_TYPES = [
  "conversation.userJoined", "conversation.userLeft", "conversation.completed",
  "conversation.analysisCompleted", ...OPERATIONAL_TYPES,
];
const state = { live: null, lastId: null, view: null, onMessage: null };

function key() { return sessionStorage.getItem(KEY); }

async function api(method, path, body) {
  const headers = { "x-api-key": key() };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) { signOut(); throw new Error("the API key was refused"); }
  const text = await response.text();
  const doc = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error((doc && doc.error) || `HTTP ${response.status}`);
  return doc;
}

// el("td", {class: "x"}, "text", child): an element with attributes and text or element children.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(caption, headings, rows) {
  return el("table", {},
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows));
}

function field(id, label, input) {
  input.id = id;
  return el("div", { class: "field" }, el("label", { for: id }, label), input);
}

// kind "error" for failures, "info" for confirmations; both are announced at once.
function alertUser(message, kind = "error") {
  const box = document.getElementById("alert");
  box.dataset.kind = kind;
  box.textContent = message;
  setTimeout(() => { if (box.textContent === message) box.textContent = ""; }, 6000);
}

function act(fn) {
  return async (event) => {
    if (event && event.preventDefault) event.preventDefault();
    try { await fn(event); } catch (error) { alertUser(String(error.message || error)); }
  };
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }
function pct(ok, done) { return done ? `${Math.round((100 * ok) / done)}%` : "—"; }
function ms(value) { return value === null || value === undefined ? "—" : `${Math.round(value)} ms`; }

async function listAll(path, pages = 5) {
  const found = [];
  let cursor = null;
  for (let i = 0; i < pages; i += 1) {
    const sep = path.includes("?") ? "&" : "?";
    const doc = await api("GET", path + (cursor ? `${sep}cursor=${encodeURIComponent(cursor)}` : ""));
    found.push(...doc.data);
    cursor = doc.nextCursor;
    if (!cursor) break;
  }
  return found;
}

function show(title, ...content) {
  const view = document.getElementById("view");
  view.replaceChildren(el("h1", {}, title), ...content.flat());
  document.title = `${title} · convhook`;
}

// ---- live stream: fetch() (the key goes in a header, which EventSource cannot send) ----

function setLive(text) { document.getElementById("live").textContent = text; }

async function follow() {
  const controller = new AbortController();
  state.live = controller;
  while (!controller.signal.aborted && key()) {
    try {
      const headers = { "x-api-key": key(), accept: "text/event-stream" };
      if (state.lastId) headers["Last-Event-ID"] = state.lastId;
      const response = await fetch("/api/v2/stream", { headers, signal: controller.signal });
      if (response.status === 400 && state.lastId) {
        // The server's logs end before the last message seen (its database was replaced):
        // nothing to resume, so follow from now.
        state.lastId = null;
        continue;
      }
      if (!response.ok) throw new Error(`stream answered ${response.status}`);
      setLive("Live: connected");
      await readStream(response.body.getReader());
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    setLive("Live: reconnecting");
    await new Promise((resolve) => { setTimeout(resolve, 1000); });
  }
}

async function readStream(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  let message = {};
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        if (message.data !== undefined) dispatch(message);
        message = {};
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const content = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        message[name] = name === "data" && message.data !== undefined ? `${message.data}\n${content}` : content;
      }
    }
  }
}

function dispatch(message) {
  if (message.id) state.lastId = message.id;
  const data = JSON.parse(message.data);
  if (state.onMessage) state.onMessage(message.event || "message", data);
}

// ---- pages ----

// A page reads its data, then follows the stream: messages that arrive while it reads are held
// and handed to it once it is shown (its read may have been answered before they happened).
// A page left before it was shown does not take over the handler of the page that replaced it.
function holdMessages() {
  const held = [];
  // Bounded: a read that never ends must not hold the whole stream.
  const holder = (kind, data) => { if (held.length < 1000) held.push([kind, data]); };
  state.onMessage = holder;
  return (handler) => {
    if (state.onMessage !== holder) return;
    state.onMessage = handler;
    for (const [kind, data] of held) handler(kind, data);
  };
}

async function overview() {
  const since = new Date(Date.now() - 5 * 60 * 1000).toISOString();
  const [events, endpoints] = await Promise.all([
    listAll(`/api/v2/events?limit=500&createdAfter=${encodeURIComponent(since)}`, 4),
    listAll("/api/v2/endpoints?limit=100", 2),
  ]);
  let ok = 0, failed = 0, backlog = 0, oldest = null;
  for (const endpoint of endpoints) {
    const deliveries = await listAll(`/api/v2/endpoints/${endpoint.id}/deliveries?limit=200`, 1);
    for (const d of deliveries) {
      if (d.status === "delivered") ok += 1;
      else if (d.status === "failed") failed += 1;
      else {
        backlog += 1;
        if (!oldest || d.createdAt < oldest) oldest = d.createdAt;
      }
    }
  }
  const card = (label, value) => el("div", { class: "card" }, el("dt", {}, label), el("dd", {}, value));
  const age = oldest ? `${Math.round((Date.now() - new Date(oldest)) / 1000)} s` : "—";
  show("Overview",
    el("dl", { class: "cards" },
      card("Events per minute (last 5 min)", (events.length / 5).toFixed(1)),
      card("Delivery success rate (recent)", pct(ok, ok + failed)),
      card("Backlog (pending deliveries)", backlog),
      card("Oldest pending", age),
      card("Failing endpoints", endpoints.filter((e) => e.failingSince).length),
      card("Disabled endpoints", endpoints.filter((e) => !e.enabled).length)),
    el("p", {}, "Figures for this workspace (the key's), from its most recent deliveries."));
  state.onMessage = null;
}

async function endpointStats(endpoint) {
  const deliveries = await listAll(`/api/v2/endpoints/${endpoint.id}/deliveries?limit=50`, 1);
  const done = deliveries.filter((d) => d.status === "delivered" || d.status === "failed");
  const ok = done.filter((d) => d.status === "delivered").length;
  const details = await Promise.all(deliveries.slice(0, 10).map((d) => api("GET", `/api/v2/deliveries/${d.id}`)));
  const latencies = details.flatMap((d) => d.attemptLog.map((a) => a.latencyMs)).filter((v) => v !== null);
  latencies.sort((a, b) => a - b);
  return { rate: pct(ok, done.length), latency: latencies.length ? ms(latencies[Math.floor(latencies.length / 2)]) : "—" };
}

function secretBox(title, secret) {
  const copy = el("button", { type: "button", onclick: act(async () => {
    await navigator.clipboard.writeText(secret);
    copy.textContent = "Copied";
  }) }, "Copy secret");
  return el("div", { class: "secret", role: "region", "aria-label": title },
    el("p", {}, `${title}: shown this once, store it now.`),
    el("code", { id: "secret" }, secret), " ", copy);
}

// focus: the id of the endpoint to point out (an operational event's subject links here).
async function endpoints(notice, focus) {
  const found = await listAll("/api/v2/endpoints?limit=100", 5);
  const stats = await Promise.all(found.map(endpointStats));
  const url = el("input", { type: "url", required: true, placeholder: "where events are posted" });
  const description = el("input", { type: "text" });
  const create = el("form", { "aria-label": "Create an endpoint", onsubmit: act(async () => {
    const made = await api("POST", "/api/v2/endpoints", { url: url.value, description: description.value });
    await endpoints(secretBox(`Signing secret of ${made.id}`, made.secret));
  }) },
    field("endpoint-url", "URL", url), field("endpoint-description", "Description", description),
    el("button", { type: "submit" }, "Create endpoint"));
  const rows = found.map((e, i) => el("tr", { "data-endpoint": e.id, "aria-current": e.id === focus ? "true" : null },
    el("th", { scope: "row", class: "mono", tabindex: e.id === focus ? "-1" : null }, e.id),
    el("td", {}, e.url, e.description ? el("br") : null, e.description),
    el("td", { class: e.enabled ? (e.failingSince ? "warn" : "ok") : "bad" },
      e.enabled ? (e.failingSince ? `failing since ${when(e.failingSince)}` : "enabled") : `disabled${e.disabledReason ? ` (${e.disabledReason})` : ""}`),
    el("td", {}, stats[i].rate), el("td", {}, stats[i].latency),
    el("td", {}, el("div", { class: "actions" },
      el("button", { type: "button", class: "secondary", "aria-label": `${e.enabled ? "Disable" : "Enable"} ${e.url}`,
        onclick: act(async () => { await api("POST", `/api/v2/endpoints/${e.id}/${e.enabled ? "disable" : "enable"}`); await endpoints(); }) },
      e.enabled ? "Disable" : "Enable"),
      el("button", { type: "button", class: "secondary", "aria-label": `Rotate the secret of ${e.url}`,
        onclick: act(async () => {
          const rotated = await api("POST", `/api/v2/endpoints/${e.id}/rotate-secret`, {});
          await endpoints(secretBox(`New signing secret of ${e.id}`, rotated.secret));
        }) }, "Rotate secret"),
      el("button", { type: "button", class: "secondary", "aria-label": `Send a test event to ${e.url}`,
        onclick: act(async () => {
          const queued = await api("POST", `/api/v2/endpoints/${e.id}/test`, {});
          location.hash = `#events/${queued.eventId}?test`;
        }) }, "Send test event")))));
  show("Endpoints", notice || "", el("h2", {}, "New endpoint"), create,
    el("h2", {}, "Endpoints"),
    table("Endpoints", ["Id", "URL", "State", "Success rate", "Median latency", "Actions"], rows));
  state.onMessage = null;
  if (notice) document.getElementById("secret").focus?.();
  if (focus) {
    const row = document.querySelector(`tr[data-endpoint="${CSS.escape(focus)}"] th`);
    if (row) row.focus();
    else alertUser(`No endpoint ${focus} in this workspace.`);
  }
}

// What an event is about: its conversation, or for an operational event the endpoint it is
// filed under (its payload is an endpoint's state or a delivery failure, with no conversation id).
function subject(e) {
  const payload = e.payload || {};
  if (OPERATIONAL_TYPES.includes(e.eventType)) {
    const endpoint = payload.endpointId || e.conversationId;
    return endpoint
      ? ["Endpoint ", el("a", { href: `#endpoints/${encodeURIComponent(endpoint)}`, class: "mono" }, endpoint)]
      : "—";
  }
  const conversation = e.conversationId || payload.id;
  return conversation
    ? el("a", { href: `#conversations/${encodeURIComponent(conversation)}`, class: "mono" }, conversation)
    : "—";
}

function eventRow(e) {
  const payload = e.payload || {};
  return el("tr", { "data-event": e.eventId },
    el("th", { scope: "row" }, el("a", { href: `#events/${e.eventId}`, class: "mono" }, e.eventId)),
    el("td", {}, e.eventType),
    el("td", {}, subject(e)),
    // A listed event has no createdAt: its payload's time stands in (`at` for operational ones).
    el("td", {}, when(e.createdAt || payload.updatedAt || payload.at)));
}

async function events(params) {
  const query = new URLSearchParams(params || "");
  const type = el("select", {}, el("option", { value: "" }, "Any"),
    EVENT_TYPES.map((t) => el("option", { value: t, selected: query.get("eventType") === t }, t)));
  const conversation = el("input", { type: "text", value: query.get("conversationId") || "" });
  const after = el("input", { type: "datetime-local", value: query.get("after") || "" });
  const before = el("input", { type: "datetime-local", value: query.get("before") || "" });
  const filter = el("form", { role: "search", "aria-label": "Filter events", onsubmit: act(async () => {
    const next = new URLSearchParams();
    if (type.value) next.set("eventType", type.value);
    if (conversation.value) next.set("conversationId", conversation.value.trim());
    if (after.value) next.set("after", after.value);
    if (before.value) next.set("before", before.value);
    location.hash = `#events?${next}`;
  }) },
    field("filter-type", "Event type", type), field("filter-conversation", "Conversation", conversation),
    field("filter-after", "Created after", after), field("filter-before", "Created before", before),
    el("button", { type: "submit" }, "Filter"));
  const apiQuery = new URLSearchParams({ limit: "200" });
  if (query.get("eventType")) apiQuery.set("eventType", query.get("eventType"));
  if (query.get("conversationId")) apiQuery.set("conversationId", query.get("conversationId"));
  if (query.get("after")) apiQuery.set("createdAfter", new Date(query.get("after")).toISOString());
  if (query.get("before")) apiQuery.set("createdBefore", new Date(query.get("before")).toISOString());
  // The API lists oldest first: without a window the page starts an hour ago, so its first
  // page is recent rather than the workspace's first events.
  const recent = !query.get("after") && !query.get("before") && !query.get("conversationId");
  if (recent) apiQuery.set("createdAfter", new Date(Date.now() - 3600 * 1000).toISOString());
  const body = el("tbody", { id: "event-rows" });
  let cursor = null;
  const more = el("button", { type: "button", class: "secondary", onclick: act(() => loadPage()) },
    "Load newer events");
  async function loadPage() {
    const page = new URLSearchParams(apiQuery);
    if (cursor) page.set("cursor", cursor);
    const doc = await api("GET", `/api/v2/events?${page}`);
    for (const e of doc.data) {
      if (!body.querySelector(`[data-event="${CSS.escape(e.eventId)}"]`)) body.prepend(eventRow(e));
    }
    cursor = doc.nextCursor;
    more.hidden = !cursor;
  }
  const follow = holdMessages();
  await loadPage();
  show("Events", filter,
    recent ? el("p", {}, "Showing the last hour; set “Created after” to see older events.") : "",
    el("table", {}, el("caption", {}, "Events, newest first; new ones appear at the top"),
      el("thead", {}, el("tr", {}, ["Event", "Type", "Subject", "Time"].map((h) => el("th", { scope: "col" }, h)))),
      body), more);
  follow((kind, data) => {
    if (kind !== "event" || query.get("before")) return;
    if (query.get("eventType") && query.get("eventType") !== data.eventType) return;
    if (query.get("conversationId") && query.get("conversationId") !== data.conversationId) return;
    if (body.querySelector(`[data-event="${CSS.escape(data.eventId)}"]`)) return;
    body.prepend(eventRow({ ...data, payload: data.event && data.event.payload }));
  });
}

function attemptRows(delivery) {
  return delivery.attemptLog.map((a, i) => el("tr", {},
    el("th", { scope: "row" }, String(i + 1)),
    el("td", {}, when(a.attemptedAt)),
    el("td", { class: a.statusCode >= 200 && a.statusCode < 300 ? "ok" : "bad" }, a.statusCode ?? a.error ?? "—"),
    el("td", {}, ms(a.latencyMs)),
    el("td", {}, el("button", { type: "button", class: "secondary",
      "aria-label": `Open attempt ${i + 1} of ${delivery.id}`,
      onclick: act(() => openAttempt(delivery, a, i + 1)) }, "Open"))));
}

function openAttempt(delivery, attempt, number) {
  const box = document.getElementById("attempt");
  box.replaceChildren(
    el("h2", { id: "attempt-title", tabindex: "-1" }, `Attempt ${number} of ${delivery.id}`),
    el("dl", {},
      el("dt", {}, "Endpoint"), el("dd", { class: "mono" }, delivery.endpointId),
      el("dt", {}, "Time"), el("dd", {}, when(attempt.attemptedAt)),
      el("dt", {}, "Status"), el("dd", {}, attempt.statusCode ?? "none"),
      el("dt", {}, "Latency"), el("dd", {}, ms(attempt.latencyMs)),
      el("dt", {}, "Error"), el("dd", {}, attempt.error || "none")),
    el("h3", {}, "Response body"), el("pre", { id: "attempt-body" }, attempt.responseBody ?? ""));
  document.getElementById("attempt-title").focus();
}

async function eventDetail(eventId, test) {
  // A test event goes to one endpoint and is not kept in the event log: only its deliveries.
  let body = "A test event: it is not kept in the event log.";
  if (!test) {
    try {
      body = JSON.stringify(await api("GET", `/api/v2/events/${encodeURIComponent(eventId)}`), null, 2);
    } catch (error) { body = error.message; }
  }
  const deliveriesBox = el("div", { id: "deliveries" });
  let latest = 0;
  const render = async () => {
    const mine = ++latest;
    const doc = await api("GET", `/api/v2/events/${encodeURIComponent(eventId)}/deliveries`);
    if (mine !== latest) return; // a later read is on its way: an earlier answer may be staler
    deliveriesBox.replaceChildren(...(doc.data.length ? doc.data.map((d) => el("section", { "aria-label": `Delivery ${d.id}` },
      el("h3", {}, `${d.id} to `, el("span", { class: "mono" }, d.endpointId), `: ${d.status}`),
      el("table", { "data-delivery": d.id }, el("caption", {}, `Attempts of ${d.id}`),
        el("thead", {}, el("tr", {}, ["Attempt", "Time", "Status", "Latency", ""].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, attemptRows(d))))) : [el("p", {}, "No deliveries yet.")]));
  };
  const follow = holdMessages();
  await render();
  show(`Event ${eventId}`,
    el("p", {}, el("a", { href: "#events" }, "All events")),
    el("h2", {}, "Body"), el("pre", { id: "event-body", tabindex: "0" }, body),
    el("h2", {}, "Deliveries"),
    el("button", { type: "button", onclick: act(async () => {
      const queued = await api("POST", `/api/v2/events/${encodeURIComponent(eventId)}/redeliver`, {});
      alertUser(`${queued.queued} deliver${queued.queued === 1 ? "y" : "ies"} queued again`, "info");
      await render();
    }) }, "Redeliver"),
    deliveriesBox, el("section", { id: "attempt", "aria-live": "polite" }));
  let pending = null;
  follow((kind, data) => {
    if (kind !== "attempt" || data.eventId !== eventId || pending) return;
    pending = setTimeout(() => { pending = null; render().catch((e) => alertUser(e.message)); }, 100);
  });
}

async function conversations(id) {
  const input = el("input", { type: "text", required: true, value: id || "" });
  const form = el("form", { role: "search", "aria-label": "Find a conversation", onsubmit: act(() => {
    location.hash = `#conversations/${input.value.trim()}`;
  }) }, field("conversation-id", "Conversation id", input), el("button", { type: "submit" }, "Show"));
  if (!id) {
    const recent = (await api("GET", "/api/v2/conversations?limit=50")).data;
    show("Conversations", form, table("Recent conversations", ["Conversation", "Agent", "Status", "Updated"],
      recent.map((c) => el("tr", {},
        el("th", { scope: "row" }, el("a", { href: `#conversations/${c.id}`, class: "mono" }, c.id)),
        el("td", {}, c.agentId), el("td", {}, c.conversationStatus), el("td", {}, when(c.updatedAt))))));
    state.onMessage = null;
    return;
  }
  const follow = holdMessages();
  const conversation = await api("GET", `/api/v2/conversations/${encodeURIComponent(id)}`);
  const found = await listAll(`/api/v2/events?limit=500&conversationId=${encodeURIComponent(id)}`, 4);
  const item = (e) => el("li", { "data-event": e.eventId },
    el("strong", {}, e.eventType), " ", when(e.createdAt || (e.payload && e.payload.updatedAt)), " ",
    el("a", { href: `#events/${e.eventId}`, class: "mono" }, e.eventId));
  const list = el("ol", { class: "timeline", "aria-label": "Events in order" }, found.map(item));
  show(`Conversation ${id}`, form,
    el("p", {}, `Agent ${conversation.agentId}, status ${conversation.conversationStatus}`),
    el("h2", {}, "Timeline"), list);
  follow((kind, data) => {
    if (kind === "event" && data.conversationId === id && !list.querySelector(`[data-event="${CSS.escape(data.eventId)}"]`)) {
      list.append(item({ ...data, payload: data.event && data.event.payload }));
    }
  });
}

async function failures() {
  const endpointList = await listAll("/api/v2/endpoints?limit=100", 5);
  const failed = (await Promise.all(endpointList.map((e) => listAll(`/api/v2/endpoints/${e.id}/deliveries?status=failed&limit=200`, 1)))).flat();
  const endpointSelect = el("select", { required: true }, endpointList.map((e) => el("option", { value: e.id }, e.url)));
  const since = el("input", { type: "datetime-local", required: true });
  const recover = el("form", { "aria-label": "Recover failed deliveries", onsubmit: act(async () => {
    const queued = await api("POST", `/api/v2/endpoints/${endpointSelect.value}/recover`, { since: new Date(since.value).toISOString() });
    alertUser(`${queued.queued} deliveries queued again`, "info");
    await failures();
  }) }, field("recover-endpoint", "Endpoint", endpointSelect), field("recover-since", "Failed since", since),
  el("button", { type: "submit" }, "Recover"));
  const boxes = [];
  const rows = failed.map((d) => {
    const box = el("input", { type: "checkbox", "aria-label": `Select ${d.id}`, value: d.id });
    boxes.push([box, d]);
    return el("tr", {}, el("td", {}, box),
      el("th", { scope: "row", class: "mono" }, d.id),
      el("td", {}, el("a", { href: `#events/${d.eventId}`, class: "mono" }, d.eventId)),
      el("td", { class: "mono" }, d.endpointId), el("td", {}, d.attempts),
      el("td", {}, d.lastStatusCode ?? d.lastError ?? "—"), el("td", {}, when(d.lastAttemptAt)));
  });
  const bulk = el("button", { type: "button", onclick: act(async () => {
    const chosen = boxes.filter(([box]) => box.checked).map(([, d]) => d);
    let queued = 0;
    for (const d of chosen) {
      queued += (await api("POST", `/api/v2/events/${d.eventId}/redeliver`, { endpointId: d.endpointId })).queued;
    }
    alertUser(`${queued} deliveries queued again`, "info");
    await failures();
  }) }, "Redeliver selected");
  show("Failures", el("h2", {}, "Recover since a time"), recover,
    el("h2", {}, "Failed deliveries"), failed.length ? [table("Failed deliveries",
      ["Select", "Delivery", "Event", "Endpoint", "Attempts", "Last status", "Last attempt"], rows), bulk]
      : el("p", {}, "No failed deliveries."));
  state.onMessage = null;
}

// ---- routing ----

let routing = 0;

async function route() {
  if (!key()) return;
  const mine = ++routing;
  const hash = location.hash.slice(1) || "overview";
  const [path, params] = hash.split("?");
  const [page, id] = path.split("/");
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === `#${page}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const pages = {
    overview, endpoints: () => endpoints(undefined, id && decodeURIComponent(id)), events: () => (id ? eventDetail(decodeURIComponent(id), params === "test") : events(params)),
    conversations: () => conversations(id && decodeURIComponent(id)), failures,
  };
  try {
    await (pages[page] || overview)();
    document.getElementById("view").dataset.page = page;
  } catch (error) {
    // A page that failed to show follows nothing (its messages were being held for it).
    if (mine === routing) state.onMessage = null;
    alertUser(String(error.message || error));
  }
}

function signedIn() {
  document.getElementById("signin").hidden = true;
  document.getElementById("view").hidden = false;
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  if (!state.live) follow();
  route();
}

function signOut() {
  sessionStorage.removeItem(KEY);
  if (state.live) state.live.abort();
  state.live = null;
  state.lastId = null;
  setLive("");
  document.getElementById("signin").hidden = false;
  document.getElementById("view").hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("key").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signin-form").addEventListener("submit", act(async () => {
    const input = document.getElementById("key");
    sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    await api("GET", "/api/v2/endpoints?limit=1");
    signedIn();
  }));
  document.getElementById("signout").addEventListener("click", signOut);
  window.addEventListener("hashchange", () => { route(); document.getElementById("main").focus(); });
  if (key()) signedIn();
});
