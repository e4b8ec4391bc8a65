// Parley web chat. Plain ES module, no dependencies, same origin as the API.
//
// Safety rule for this file: user-provided text (usernames, group names, messages, ids,
// server error messages) only ever reaches the page through textContent / value / attributes,
// never through innerHTML.

const STORAGE_KEY = "parley.session";
const NOTICE_KEY = "parley.tokenNoticeFor";
const POLL_WAIT_SECONDS = 25;
const POLL_CLIENT_TIMEOUT_MS = (POLL_WAIT_SECONDS + 20) * 1000;
const REQUEST_TIMEOUT_MS = 20000;
const GROUP_REFRESH_MS = 20000;
const SEND_ATTEMPTS = 4;
const NARROW_QUERY = window.matchMedia("(max-width: 720px)");

// ---------------------------------------------------------------- small helpers

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") {
      for (const [k, v] of Object.entries(value)) if (v !== undefined && v !== null) node.dataset[k] = v;
    }
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function uuid() {
  if (typeof crypto.randomUUID === "function") {
    try { return crypto.randomUUID(); } catch { /* insecure context: fall through */ }
  }
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const enc = encodeURIComponent;

function shortId(id) {
  const s = String(id);
  return s.length > 14 ? `${s.slice(0, 10)}…` : s;
}

function tsNumber(ts) {
  const n = Number(ts);
  return Number.isFinite(n) ? n : 0;
}

function formatTime(ts) {
  const d = new Date(tsNumber(ts));
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return sameDay ? time : `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

function initials(name) {
  const parts = String(name || "?").trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? [...parts[0]][0] + [...parts[1]][0] : [...(parts[0] || "?")][0];
  return letters.toUpperCase();
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Clipboard API unavailable (e.g. plain http on a LAN address): fall back to a selection copy.
    const area = el("textarea", { readonly: true, "aria-hidden": "true" });
    area.value = text;
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    area.remove();
    return ok;
  }
}

function announce(text) {
  const node = $("announcer");
  node.textContent = "";
  // A fresh text node after a tick makes screen readers announce repeated texts too.
  setTimeout(() => { node.textContent = text; }, 50);
}

// ---------------------------------------------------------------- API client

class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
  get transient() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

function parseRetryAfter(value) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, (date - Date.now()) / 1000) : null;
}

let session = null; // {userId, username, token}

async function api(method, path, { body, headers = {}, signal, token, timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
  const h = { Accept: "application/json", ...headers };
  const bearer = token ?? session?.token;
  if (bearer) h.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) h["Content-Type"] = "application/json";

  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException("timeout", "TimeoutError")), timeoutMs);
  const onOuterAbort = () => controller.abort(signal.reason);
  if (signal) {
    if (signal.aborted) controller.abort(signal.reason);
    else signal.addEventListener("abort", onOuterAbort, { once: true });
  }

  let response;
  let text = "";
  try {
    response = await fetch(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: "no-store",
      credentials: "same-origin",
    });
    text = await response.text();
  } catch (err) {
    if (signal?.aborted) throw new DOMException("aborted", "AbortError");
    if (controller.signal.aborted) throw new ApiError(0, "timeout", "The server took too long to answer.");
    throw new ApiError(0, "network_error", "Cannot reach the server. Check your connection.");
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onOuterAbort);
  }

  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!response.ok) {
    const err = data && typeof data === "object" && data.error ? data.error : {};
    throw new ApiError(
      response.status,
      typeof err.code === "string" ? err.code : `http_${response.status}`,
      typeof err.message === "string" && err.message ? err.message : `${response.status} ${response.statusText || "error"}`,
      parseRetryAfter(response.headers.get("Retry-After")),
    );
  }
  return data ?? {};
}

// The server's message, capitalised, with its error code: "The receiver has blocked you (blocked)".
function errorText(err) {
  const raw = String((err instanceof ApiError ? err.message : err?.message || err) || "Unknown error");
  const text = raw.charAt(0).toUpperCase() + raw.slice(1);
  if (err instanceof ApiError && err.code && !err.code.startsWith("http_") && err.status !== 0) {
    return `${text} (${err.code})`;
  }
  return text;
}

// Response shapes: accept both the spelled-out and short field names.
const pick = (obj, ...keys) => {
  for (const k of keys) if (obj && obj[k] !== undefined && obj[k] !== null) return obj[k];
  return undefined;
};
const idOf = (item, ...keys) => (typeof item === "string" ? item : pick(item, ...keys));
const listOf = (data, ...keys) => {
  if (Array.isArray(data)) return data;
  const v = pick(data, ...keys);
  return Array.isArray(v) ? v : [];
};

function normalizeGroup(data, fallbackId) {
  const members = listOf(data, "members", "memberIds", "userIds").map((m) => {
    const id = idOf(m, "userId", "id");
    const name = typeof m === "object" ? pick(m, "username", "userName", "name") : undefined;
    if (id && name) rememberName(id, name);
    return id;
  }).filter(Boolean);
  return {
    groupId: pick(data, "groupId", "id") ?? fallbackId,
    groupName: pick(data, "groupName", "name") ?? "Group",
    members,
  };
}

// ---------------------------------------------------------------- state

let state = null;

function freshState() {
  return {
    conversations: new Map(), // key ("u:<id>" | "g:<id>") -> conversation
    seen: new Set(),          // messageIds already placed
    groups: new Map(),        // groupId -> {groupId, groupName, members}
    blocked: new Set(),       // user ids I block
    selected: null,           // conversation key
    cursor: null,             // nextTimestamp for the next poll
    caughtUp: false,
    abort: new AbortController(),
    lastGroupRefresh: 0,
    pollRequest: null,
    timer: null,
    groupsLoaded: false,
    membersOpen: false,
    discovering: new Set(),
  };
}

const names = new Map(); // userId -> {name, promise, missing}

function rememberName(id, name) {
  const entry = names.get(id) || {};
  if (entry.name === name) return;
  entry.name = name;
  entry.missing = false;
  names.set(id, entry);
  refreshNameNodes(id);
}

// Shows the cached username; an unknown id is looked up in the background (and the page
// updated when the answer comes).
function displayName(id) {
  if (session && id === session.userId) return session.username || "You";
  const entry = names.get(id);
  if (entry?.name) return entry.name;
  if (entry?.missing) return `Unknown user ${shortId(id)}`;
  if (state) resolveUser(id);
  return shortId(id);
}

const NAME_RETRY_MS = 30000;

function resolveUser(id) {
  let entry = names.get(id);
  if (entry?.name || entry?.missing) return Promise.resolve(entry.name ?? null);
  if (entry?.promise) return entry.promise;
  if (entry?.failedAt && Date.now() - entry.failedAt < NAME_RETRY_MS) return Promise.resolve(null);
  entry = entry || {};
  entry.promise = api("GET", `/v1/users/${enc(id)}`)
    .then((data) => {
      const name = pick(data, "username", "userName", "name");
      entry.name = typeof name === "string" ? name : shortId(id);
      return entry.name;
    })
    .catch((err) => {
      if (err instanceof ApiError && err.status === 404) entry.missing = true;
      else entry.failedAt = Date.now();
      return null;
    })
    .finally(() => {
      entry.promise = null;
      refreshNameNodes(id);
    });
  names.set(id, entry);
  return entry.promise;
}

// Elements that show a user's name carry data-user-id and data-name-format, so a late answer
// from GET /v1/users/:id updates them in place.
function nameNode(id, tag = "span", className = "") {
  return el(tag, { className, dataset: { userId: id } }, displayName(id));
}

function refreshNameNodes(id) {
  if (!state) return;
  const entry = names.get(id);
  if (!entry?.name && !entry?.missing) return;
  for (const node of document.querySelectorAll(`[data-user-id="${CSS.escape(id)}"]`)) {
    node.textContent = displayName(id);
  }
  scheduleRender();
}

// ---------------------------------------------------------------- conversations

function convKeyFor(message) {
  if (message.type === "group") return `g:${message.recipientId}`;
  const other = message.senderId === session.userId ? message.recipientId : message.senderId;
  return `u:${other}`;
}

function ensureConversation(key) {
  let conv = state.conversations.get(key);
  if (!conv) {
    const kind = key.startsWith("g:") ? "group" : "private";
    conv = { key, kind, id: key.slice(2), messages: [], unread: 0, lastTs: 0, error: null };
    state.conversations.set(key, conv);
  }
  return conv;
}

function convTitle(conv) {
  if (conv.kind === "group") return state.groups.get(conv.id)?.groupName ?? `Group ${shortId(conv.id)}`;
  if (conv.id === session.userId) return `${session.username || "You"} (you)`;
  return displayName(conv.id);
}

const sortKey = (m) => (m.pending ? Number.MAX_SAFE_INTEGER : tsNumber(m.timestamp));

function insertSorted(list, item) {
  const k = sortKey(item);
  let i = list.length;
  while (i > 0 && sortKey(list[i - 1]) > k) i -= 1;
  list.splice(i, 0, item);
  return i;
}

function isMessage(m) {
  return m && typeof m === "object" && typeof m.messageId === "string" && (m.type === "private" || m.type === "group");
}

// Our own message came back through the poll while its send is still waiting for an answer
// (or gave up after a network error): hide the local copy so the text is not shown twice. The
// send itself carries on with the same Idempotency-Key, so the server still stores it once.
function supersedeLocalCopy(conv, m) {
  const local = conv.messages.find((x) => !x.messageId && !x.superseded
    && (x.pending || x.transientFailure) && x.message === m.message);
  if (!local) return;
  local.superseded = true;
  conv.messages.splice(conv.messages.indexOf(local), 1);
  if (local.failure && conv.error === local.failure) conv.error = null;
}

// Place server messages; returns those that were new.
function ingest(messages, { live }) {
  const fresh = [];
  for (const m of messages) {
    if (!isMessage(m) || state.seen.has(m.messageId)) continue;
    state.seen.add(m.messageId);
    const conv = ensureConversation(convKeyFor(m));
    if (m.senderId === session.userId) supersedeLocalCopy(conv, m);
    const item = { ...m, key: m.messageId };
    insertSorted(conv.messages, item);
    conv.lastTs = Math.max(conv.lastTs, tsNumber(m.timestamp));
    if (m.type === "group" && !state.groups.has(m.recipientId)) discoverGroup(m.recipientId, live);
    if (m.senderId !== session.userId && live) {
      const visible = state.selected === conv.key && !document.hidden && (!NARROW_QUERY.matches || appView() === "chat");
      if (!visible) conv.unread += 1;
      fresh.push({ m, conv, visible });
    }
  }
  if (fresh.length) {
    const last = fresh[fresh.length - 1];
    if (!last.visible) {
      const where = last.conv.kind === "group" ? ` in ${convTitle(last.conv)}` : "";
      announce(`New message from ${displayName(last.m.senderId)}${where}: ${last.m.message}`);
    }
    updateTitle();
  }
  scheduleRender();
  return fresh;
}

// ---------------------------------------------------------------- long-poll loop

function setConnection(kind, detail = "") {
  const node = $("connection");
  if (kind === "live") {
    node.hidden = true;
    node.textContent = "";
    node.dataset.state = "live";
    return;
  }
  node.hidden = false;
  node.dataset.state = kind;
  node.textContent = kind === "offline" ? `Reconnecting… ${detail}`.trim() : "Connecting…";
}

async function pollLoop(st) {
  let backoff = 1000;
  setConnection("connecting");
  while (state === st && !st.abort.signal.aborted) {
    const params = new URLSearchParams({ include: "sent" });
    if (st.cursor !== null) params.set("timestamp", st.cursor);
    if (st.caughtUp) params.set("wait", String(POLL_WAIT_SECONDS));
    // One controller per request, so restartPoll() can cut a long-poll short without ending
    // the session; the cursor only moves on a complete answer, so nothing is lost.
    const request = new AbortController();
    const stop = () => request.abort();
    st.abort.signal.addEventListener("abort", stop, { once: true });
    st.pollRequest = request;
    try {
      const data = await api("GET", `/v1/messages/${enc(session.userId)}?${params}`, {
        signal: request.signal,
        timeoutMs: st.caughtUp ? POLL_CLIENT_TIMEOUT_MS : REQUEST_TIMEOUT_MS,
      });
      if (state !== st) return;
      const messages = Array.isArray(data.messages) ? data.messages : [];
      ingest(messages, { live: st.caughtUp });
      if (data.nextTimestamp !== undefined && data.nextTimestamp !== null) {
        st.cursor = String(data.nextTimestamp);
      } else if (messages.length) {
        st.cursor = String(messages[messages.length - 1].timestamp);
      } else if (st.cursor === null) {
        st.cursor = "0";
      }
      backoff = 1000;
      setConnection("live");
      if (data.hasMore) continue; // another page is waiting: fetch it at once
      if (!st.caughtUp) {
        st.caughtUp = true;
        scheduleRender();
      }
    } catch (err) {
      if (state !== st || st.abort.signal.aborted) return;
      if (err?.name === "AbortError") continue; // restartPoll(): ask again at once
      if (err instanceof ApiError && err.status === 401) {
        sessionRejected(err);
        return;
      }
      if (err instanceof ApiError && (err.status === 403 || err.status === 404)) {
        showBanner(`This browser's account can no longer read messages: ${errorText(err)}. Sign out and sign in again.`);
        setConnection("offline", "");
        return;
      }
      const waitMs = err?.retryAfter != null ? err.retryAfter * 1000 : backoff;
      setConnection("offline", `(retrying in ${Math.ceil(waitMs / 1000)} s)`);
      await sleep(waitMs + Math.random() * 300);
      backoff = Math.min(backoff * 2, 30000);
    } finally {
      st.abort.signal.removeEventListener("abort", stop);
      if (st.pollRequest === request) st.pollRequest = null;
    }
  }
}

// Start a fresh long-poll now. Used after our group memberships change (we created a group or
// found one we were added to): a long-poll started before the change may not be woken by the
// new group's messages until its wait ends.
function restartPoll() {
  if (state?.caughtUp && state.pollRequest) state.pollRequest.abort();
}

// Full history again (used when we discover a group we were just added to: its history is
// visible to us now but older than our cursor). Does not move the live cursor; duplicates are
// dropped by messageId.
async function resyncHistory(st) {
  let cursor = null;
  for (let page = 0; page < 200 && state === st; page += 1) {
    const params = new URLSearchParams({ include: "sent" });
    if (cursor !== null) params.set("timestamp", cursor);
    let data;
    try {
      data = await api("GET", `/v1/messages/${enc(session.userId)}?${params}`, { signal: st.abort.signal });
    } catch {
      return;
    }
    if (state !== st) return;
    const messages = Array.isArray(data.messages) ? data.messages : [];
    ingest(messages, { live: false });
    if (!data.hasMore) return;
    cursor = String(data.nextTimestamp ?? messages.at(-1)?.timestamp ?? "0");
  }
}

// ---------------------------------------------------------------- groups and blocks

async function loadGroup(groupId) {
  const st = state;
  try {
    const data = await api("GET", `/v1/groups/${enc(groupId)}`, { signal: st.abort.signal });
    if (state !== st) return null;
    const group = normalizeGroup(data, groupId);
    state.groups.set(groupId, group);
    ensureConversation(`g:${groupId}`);
    scheduleRender();
    return group;
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 403)) {
      // Gone, or we are no longer a member.
      if (state === st) dropGroup(groupId);
    }
    return null;
  }
}

// A group we did not know about (we were just added): load it, and since its history is now
// visible to us but older than our cursor, read the history once more.
function discoverGroup(groupId, resync) {
  if (state.discovering.has(groupId)) return;
  state.discovering.add(groupId);
  const st = state;
  loadGroup(groupId).then((group) => {
    st.discovering.delete(groupId);
    if (group && resync && state === st) {
      restartPoll();
      resyncHistory(st);
    }
  });
}

let groupRefreshRunning = null;

function refreshGroups() {
  if (groupRefreshRunning) return groupRefreshRunning;
  const st = state;
  st.lastGroupRefresh = Date.now();
  groupRefreshRunning = (async () => {
    try {
      const data = await api("GET", `/v1/users/${enc(session.userId)}/groups`, { signal: st.abort.signal });
      if (state !== st) return;
      const items = listOf(data, "groups", "groupIds");
      const ids = new Set();
      let discovered = false;
      const loads = [];
      for (const item of items) {
        const id = idOf(item, "groupId", "id");
        if (!id) continue;
        ids.add(id);
        const name = typeof item === "object" ? pick(item, "groupName", "name") : undefined;
        if (!state.groups.has(id)) {
          if (st.groupsLoaded) discovered = true;
          if (name) state.groups.set(id, { groupId: id, groupName: name, members: [] });
          ensureConversation(`g:${id}`);
          loads.push(loadGroup(id));
        } else if (state.selected === `g:${id}`) {
          loads.push(loadGroup(id)); // keep the open group's members current
        }
      }
      for (const id of [...state.groups.keys()]) if (!ids.has(id)) dropGroup(id);
      await Promise.all(loads);
      st.groupsLoaded = true;
      scheduleRender();
      if (discovered) {
        restartPoll();
        resyncHistory(st);
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) sessionRejected(err);
    } finally {
      groupRefreshRunning = null;
    }
  })();
  return groupRefreshRunning;
}

function dropGroup(groupId) {
  state.groups.delete(groupId);
  const key = `g:${groupId}`;
  const conv = state.conversations.get(key);
  if (conv) {
    for (const m of conv.messages) if (m.messageId) state.seen.delete(m.messageId);
    state.conversations.delete(key);
  }
  if (state.selected === key) {
    state.selected = null;
    setAppView("list");
  }
  scheduleRender();
}

async function refreshBlocked() {
  const st = state;
  try {
    const data = await api("GET", `/v1/users/${enc(session.userId)}/blocked`, { signal: st.abort.signal });
    if (state !== st) return;
    const ids = listOf(data, "blocked", "blockedUserIds", "blockedUsers", "users", "userIds")
      .map((b) => idOf(b, "userId", "blockedUserId", "id"))
      .filter(Boolean);
    state.blocked = new Set(ids);
    scheduleRender();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) sessionRejected(err);
  }
}

// ---------------------------------------------------------------- sending

async function sendMessage(conv, text) {
  const item = {
    key: `local:${uuid()}`,
    idempotencyKey: uuid(),
    pending: true,
    failed: false,
    type: conv.kind,
    senderId: session.userId,
    recipientId: conv.id,
    message: text,
    timestamp: String(Date.now()),
  };
  insertSorted(conv.messages, item);
  conv.error = null;
  scheduleRender();
  await deliver(conv, item);
}

async function deliver(conv, item) {
  const st = state;
  item.pending = true;
  item.failed = false;
  item.failure = "";
  item.transientFailure = false;
  scheduleRender();

  const body = conv.kind === "group"
    ? { senderId: session.userId, groupId: conv.id, message: item.message }
    : { senderId: session.userId, receiverId: conv.id, message: item.message };
  let lastError = null;
  for (let attempt = 0; attempt < SEND_ATTEMPTS; attempt += 1) {
    try {
      const data = await api("POST", `/v1/messages/send?type=${conv.kind}`, {
        body,
        headers: { "Idempotency-Key": item.idempotencyKey },
        signal: st.abort.signal,
      });
      if (state !== st) return;
      const stored = isMessage(data) ? data : isMessage(data?.message) ? data.message : null;
      const list = conv.messages;
      const index = list.indexOf(item);
      if (index >= 0) list.splice(index, 1);
      if (stored && !state.seen.has(stored.messageId)) {
        state.seen.add(stored.messageId);
        insertSorted(list, { ...stored, key: stored.messageId });
        conv.lastTs = Math.max(conv.lastTs, tsNumber(stored.timestamp));
      } else if (!stored) {
        // Unknown answer shape: keep the text visible until the poll delivers the real one.
        insertSorted(list, { ...item, pending: false, key: item.key, timestamp: String(Date.now()) });
      }
      conv.error = null;
      scheduleRender();
      return;
    } catch (err) {
      if (state !== st || err?.name === "AbortError") return;
      lastError = err;
      if (err instanceof ApiError && err.status === 401) {
        sessionRejected(err);
        break;
      }
      if (!(err instanceof ApiError) || !err.transient || attempt === SEND_ATTEMPTS - 1) break;
      // Same Idempotency-Key on every retry: the server stores the message once.
      const waitMs = err.retryAfter != null ? err.retryAfter * 1000 : 500 * 2 ** attempt;
      await sleep(Math.min(waitMs, 10000));
      if (state !== st) return;
    }
  }
  if (item.superseded) return; // the poll already showed it stored: nothing failed for the user
  item.pending = false;
  item.failed = true;
  item.transientFailure = !(lastError instanceof ApiError) || lastError.transient;
  item.failure = sendFailureText(conv, lastError);
  conv.error = item.failure;
  scheduleRender();
  if (state.selected === conv.key) $("composer-input").focus();
}

function sendFailureText(conv, err) {
  const detail = errorText(err);
  if (!(err instanceof ApiError)) return `Message not sent. ${detail}`;
  if (err.status === 403) {
    return conv.kind === "private"
      ? `You can't message this user. Server says: ${detail}`
      : `You can't post in this group. Server says: ${detail}`;
  }
  if (err.status === 404) {
    return conv.kind === "private"
      ? `This user does not exist. Server says: ${detail}`
      : `This group does not exist. Server says: ${detail}`;
  }
  if (err.status === 0) return `Message not sent: the server could not be reached. ${detail}`;
  return `Message not sent. Server says: ${detail}`;
}

// ---------------------------------------------------------------- rendering

let renderQueued = false;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    if (state) render();
  });
}

function render() {
  renderConversationList();
  renderChat();
  renderBlocked();
}

function appView() {
  return $("app-view").dataset.view;
}

function setAppView(view) {
  $("app-view").dataset.view = view;
  document.body.dataset.view = view;
}

function lastMessage(conv) {
  return conv.messages.at(-1) ?? null;
}

function sortedConversations() {
  return [...state.conversations.values()].sort((a, b) => {
    if (b.lastTs !== a.lastTs) return b.lastTs - a.lastTs;
    return convTitle(a).localeCompare(convTitle(b));
  });
}

const convRows = new Map(); // conversation key -> {li, signature}

function renderConversationList() {
  const list = $("conversation-list");
  const convs = sortedConversations();
  $("no-conversations").hidden = convs.length > 0;
  const keep = new Set();
  let previous = null;
  for (const conv of convs) {
    const title = convTitle(conv);
    const last = lastMessage(conv);
    let preview = conv.kind === "group" ? "Group" : "Private conversation";
    if (last) {
      const who = last.senderId === session.userId ? "You" : displayName(last.senderId);
      preview = conv.kind === "group" || last.senderId === session.userId ? `${who}: ${last.message}` : last.message;
      if (last.failed) preview = `Not sent: ${last.message}`;
      else if (last.pending) preview = `Sending: ${last.message}`;
    }
    const blocked = conv.kind === "private" && state.blocked.has(conv.id);
    const selected = state.selected === conv.key;
    const time = last && !last.pending ? formatTime(last.timestamp) : "";
    const signature = JSON.stringify([title, preview, blocked, selected, time, conv.unread]);
    keep.add(conv.key);

    let row = convRows.get(conv.key);
    if (!row || row.signature !== signature) {
      const label = [
        conv.kind === "group" ? `Group ${title}` : title,
        blocked ? "blocked" : "",
        conv.unread ? `${conv.unread} unread` : "",
      ].filter(Boolean).join(", ");
      const children = [
        el("span", { className: conv.kind === "group" ? "avatar group" : "avatar", "aria-hidden": "true" },
          conv.kind === "group" ? "#" : initials(title)),
        el("span", { className: "conv-name" }, title, blocked ? " (blocked)" : ""),
        el("span", { className: "conv-preview" }, preview),
        el("span", { className: "conv-side" },
          time ? el("span", { className: "conv-time" }, time) : null,
          conv.unread ? el("span", { className: "badge", "aria-hidden": "true" }, String(conv.unread)) : null),
      ];
      if (row) {
        // Update in place so focus and an in-progress click survive.
        const button = row.li.firstChild;
        button.replaceChildren(...children);
        button.setAttribute("aria-label", label);
        if (selected) button.setAttribute("aria-current", "true");
        else button.removeAttribute("aria-current");
        row.signature = signature;
      } else {
        const button = el("button", {
          type: "button",
          className: "conv",
          "aria-current": selected ? "true" : false,
          "aria-label": label,
          dataset: { conv: conv.key },
          onclick: () => selectConversation(conv.key, { focus: true }),
        }, ...children);
        row = { li: el("li", {}, button), signature };
        convRows.set(conv.key, row);
      }
    }
    const expectedPosition = previous ? previous.nextSibling : list.firstChild;
    if (expectedPosition !== row.li) {
      const hadFocus = row.li.contains(document.activeElement);
      if (previous) previous.after(row.li);
      else list.prepend(row.li);
      if (hadFocus) row.li.firstChild.focus();
    }
    previous = row.li;
  }
  for (const [key, row] of convRows) {
    if (!keep.has(key)) {
      row.li.remove();
      convRows.delete(key);
    }
  }
}

let renderedChatKey = null;
const renderedMessages = new Map(); // message key -> element

function messageElement(conv, m) {
  const mine = m.senderId === session.userId;
  const classes = ["msg", mine ? "mine" : "theirs"];
  if (m.pending) classes.push("pending");
  if (m.failed) classes.push("failed");
  const meta = el("div", { className: "msg-meta" },
    mine ? el("span", { className: "msg-sender" }, "You") : nameNode(m.senderId, "span", "msg-sender"),
    m.pending || m.failed ? null : el("time", { datetime: new Date(tsNumber(m.timestamp)).toISOString() }, formatTime(m.timestamp)));
  const node = el("article", { className: classes.join(" "), dataset: { key: m.key, messageId: m.messageId } },
    meta, el("p", { className: "msg-text" }, m.message));
  if (m.pending) node.append(el("div", { className: "msg-status" }, "Sending…"));
  if (m.failed) {
    node.append(el("div", { className: "msg-status" },
      el("span", { className: "msg-failure" }, "Not sent."),
      el("button", { type: "button", className: "btn btn-small", onclick: () => deliver(conv, m) }, "Retry"),
      el("button", {
        type: "button", className: "btn btn-small",
        onclick: () => {
          const i = conv.messages.indexOf(m);
          if (i >= 0) conv.messages.splice(i, 1);
          if (conv.error === m.failure) conv.error = null;
          scheduleRender();
        },
      }, "Discard")));
  }
  node.dataset.state = m.pending ? "pending" : m.failed ? "failed" : "sent";
  return node;
}

function renderMessages(conv) {
  const list = $("messages");
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const rebuild = renderedChatKey !== conv.key;
  if (rebuild) {
    list.setAttribute("aria-busy", "true");
    list.replaceChildren();
    renderedMessages.clear();
    renderedChatKey = conv.key;
  }
  // Remove elements whose message is gone or changed state; then insert in order.
  const byKey = new Map(conv.messages.map((m) => [m.key, m]));
  for (const [key, node] of renderedMessages) {
    const m = byKey.get(key);
    const stateNow = m ? (m.pending ? "pending" : m.failed ? "failed" : "sent") : null;
    if (!m || node.dataset.state !== stateNow) {
      node.remove();
      renderedMessages.delete(key);
    }
  }
  let previous = null;
  for (const m of conv.messages) {
    let node = renderedMessages.get(m.key);
    if (!node) {
      node = messageElement(conv, m);
      renderedMessages.set(m.key, node);
      if (previous) previous.after(node);
      else list.prepend(node);
    } else if (previous && previous.nextSibling !== node) {
      previous.after(node);
    }
    previous = node;
  }
  if (rebuild) list.removeAttribute("aria-busy");
  if (rebuild || nearBottom) list.scrollTop = list.scrollHeight;
}

function renderChat() {
  const conv = state.selected ? state.conversations.get(state.selected) : null;
  $("chat-empty").hidden = Boolean(conv);
  $("chat-main").hidden = !conv;
  if (!conv) {
    renderedChatKey = null;
    return;
  }
  if (conv.unread && !document.hidden && (!NARROW_QUERY.matches || appView() === "chat")) {
    conv.unread = 0;
    updateTitle();
    queueMicrotask(renderConversationList);
  }
  const isGroup = conv.kind === "group";
  const group = isGroup ? state.groups.get(conv.id) : null;
  $("chat-title").textContent = convTitle(conv);
  if (isGroup) {
    const count = group ? group.members.length : 0;
    $("chat-subtitle").textContent = `Group · ${count} member${count === 1 ? "" : "s"}`;
  } else {
    $("chat-subtitle").textContent = `User id ${conv.id}`;
  }

  const blocked = !isGroup && state.blocked.has(conv.id);
  const blockBtn = $("block-toggle");
  blockBtn.hidden = isGroup || conv.id === session.userId;
  blockBtn.textContent = blocked ? "Unblock" : "Block";
  blockBtn.setAttribute("aria-pressed", String(blocked));
  if (!isGroup) blockBtn.setAttribute("aria-label", `${blocked ? "Unblock" : "Block"} ${displayName(conv.id)}`);

  const notice = $("chat-notice");
  notice.hidden = !blocked;
  notice.textContent = blocked ? `You blocked ${displayName(conv.id)}. They can't send you private messages until you unblock them.` : "";

  $("members-toggle").hidden = !isGroup;
  $("members-toggle").setAttribute("aria-expanded", String(isGroup && state.membersOpen));
  $("leave-group").hidden = !isGroup;
  $("members-panel").hidden = !(isGroup && state.membersOpen);
  if (isGroup && state.membersOpen) renderMembers(conv, group);

  const errorBox = $("chat-error");
  errorBox.hidden = !conv.error;
  if ($("chat-error-text").textContent !== (conv.error || "")) $("chat-error-text").textContent = conv.error || "";

  renderMessages(conv);
}

function renderMembers(conv, group) {
  const members = group ? group.members : [];
  const rows = members.map((id) => {
    const self = id === session.userId;
    return el("li", { className: "person-row" },
      el("span", { className: "who" },
        self ? el("span", {}, `${session.username || "You"} (you)`) : nameNode(id),
        " ", el("small", {}, shortId(id))),
      self
        ? null
        : el("button", {
          type: "button",
          className: "btn btn-small",
          "aria-label": `Remove ${displayName(id)} from the group`,
          onclick: () => removeMember(conv.id, id),
        }, "Remove"));
  });
  $("member-list").replaceChildren(...rows);
}

function renderBlocked() {
  const ids = [...state.blocked];
  $("no-blocked").hidden = ids.length > 0;
  $("blocked-list").replaceChildren(...ids.map((id) => el("li", { className: "person-row" },
    el("span", { className: "who" }, nameNode(id), " ", el("small", {}, shortId(id))),
    el("button", {
      type: "button", className: "btn btn-small",
      "aria-label": `Unblock ${displayName(id)}`,
      onclick: () => setBlocked(id, false),
    }, "Unblock"))));
}

function updateTitle() {
  if (!state) {
    document.title = "Parley";
    return;
  }
  let unread = 0;
  for (const c of state.conversations.values()) unread += c.unread;
  document.title = unread ? `(${unread}) Parley` : "Parley";
}

function showBanner(text) {
  $("banner-text").textContent = text;
  $("banner").hidden = false;
}

// ---------------------------------------------------------------- actions

function selectConversation(key, { focus = false } = {}) {
  if (!state.conversations.has(key)) return;
  if (state.selected !== key) state.membersOpen = false;
  state.selected = key;
  setAppView("chat");
  const conv = state.conversations.get(key);
  conv.unread = 0;
  updateTitle();
  render();
  if (focus) $("composer-input").focus();
}

async function openPrivate(userId) {
  const id = userId.trim();
  const errorNode = $("sidebar-error");
  errorNode.textContent = "";
  if (!id) {
    errorNode.textContent = "Paste a user id first.";
    return false;
  }
  try {
    const data = await api("GET", `/v1/users/${enc(id)}`);
    const name = pick(data, "username", "userName", "name");
    if (typeof name === "string") rememberName(id, name);
  } catch (err) {
    errorNode.textContent = err instanceof ApiError && err.status === 404
      ? `No user has the id “${id}”.`
      : `Could not look up that user: ${errorText(err)}`;
    return false;
  }
  ensureConversation(`u:${id}`);
  selectConversation(`u:${id}`, { focus: true });
  return true;
}

async function createGroup(name) {
  const errorNode = $("sidebar-error");
  errorNode.textContent = "";
  const groupName = name.trim();
  if (!groupName) {
    errorNode.textContent = "Give the group a name.";
    return false;
  }
  try {
    const data = await api("POST", "/v1/groups/create", { body: { groupName } });
    const groupId = pick(data, "groupId", "id");
    state.groups.set(groupId, { groupId, groupName: pick(data, "groupName", "name") ?? groupName, members: [session.userId] });
    ensureConversation(`g:${groupId}`);
    await loadGroup(groupId);
    restartPoll();
    selectConversation(`g:${groupId}`);
    state.membersOpen = true;
    render();
    $("add-member-id").focus();
    announce(`Group ${groupName} created. Add members by pasting their user id.`);
    return true;
  } catch (err) {
    errorNode.textContent = `Could not create the group: ${errorText(err)}`;
    return false;
  }
}

async function addMember(groupId, userId) {
  const errorNode = $("members-error");
  errorNode.textContent = "";
  const id = userId.trim();
  if (!id) {
    errorNode.textContent = "Paste a user id first.";
    return false;
  }
  try {
    await api("POST", `/v1/groups/${enc(groupId)}?op=add`, { body: { userId: id } });
  } catch (err) {
    errorNode.textContent = err instanceof ApiError && err.status === 409
      ? `Already a member. ${errorText(err)}`
      : `Could not add the member: ${errorText(err)}`;
    return false;
  }
  await resolveUser(id);
  await loadGroup(groupId);
  announce(`${displayName(id)} added to the group.`);
  return true;
}

async function removeMember(groupId, userId) {
  const errorNode = $("members-error");
  errorNode.textContent = "";
  try {
    await api("POST", `/v1/groups/${enc(groupId)}?op=remove`, { body: { userId } });
  } catch (err) {
    errorNode.textContent = `Could not remove the member: ${errorText(err)}`;
    return;
  }
  if (userId === session.userId) {
    const name = convTitle(state.conversations.get(`g:${groupId}`) || { kind: "group", id: groupId });
    dropGroup(groupId);
    announce(`You left ${name}.`);
    $("conversation-list").querySelector("button")?.focus();
    return;
  }
  announce(`${displayName(userId)} removed from the group.`);
  await loadGroup(groupId);
  $("members-toggle").focus();
}

async function setBlocked(userId, block) {
  const op = block ? "block" : "unblock";
  const conv = state.conversations.get(`u:${userId}`);
  try {
    await api("POST", `/v1/users/${enc(session.userId)}?op=${op}`, { body: { blockedUserId: userId } });
  } catch (err) {
    // 409: already in the wanted state — just resync below.
    if (!(err instanceof ApiError && err.status === 409)) {
      const text = `Could not ${op} ${displayName(userId)}: ${errorText(err)}`;
      if (conv && state.selected === conv.key) conv.error = text;
      else $("sidebar-error").textContent = text;
      scheduleRender();
      return;
    }
  }
  if (block) state.blocked.add(userId);
  else state.blocked.delete(userId);
  announce(block ? `${displayName(userId)} is blocked.` : `${displayName(userId)} is unblocked.`);
  scheduleRender();
  refreshBlocked();
}

// ---------------------------------------------------------------- session

function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    if (s && typeof s.userId === "string" && typeof s.token === "string") return s;
  } catch { /* corrupt entry: ignore */ }
  return null;
}

function saveSession(s) {
  localStorage.setItem(STORAGE_KEY, JSON.stringify({ userId: s.userId, username: s.username, token: s.token }));
}

function sessionRejected(err) {
  if (!state) return;
  state.abort.abort();
  clearInterval(state.timer);
  setConnection("offline", "");
  $("connection").textContent = "Signed out by the server";
  showBanner(`The server no longer accepts this browser's token (${errorText(err)}). Sign out, then sign in with a valid user id and token or create a new account.`);
}

function startApp(s) {
  session = s;
  state = freshState();
  renderedChatKey = null;
  renderedMessages.clear();
  convRows.clear();
  $("conversation-list").replaceChildren();
  names.clear();
  if (s.username) rememberName(s.userId, s.username);

  $("auth-view").hidden = true;
  $("app-view").hidden = false;
  $("identity").hidden = false;
  $("sign-out").hidden = false;
  $("me-name").textContent = s.username || "(unknown name)";
  $("me-id").value = s.userId;
  $("token-value").value = s.token;
  $("account-token").value = s.token;
  $("token-notice").hidden = localStorage.getItem(NOTICE_KEY) !== s.userId;
  setAppView("list");
  render();

  const st = state;
  if (!s.username) {
    api("GET", `/v1/users/${enc(s.userId)}`).then((data) => {
      const name = pick(data, "username", "userName", "name");
      if (state === st && typeof name === "string") {
        session.username = name;
        saveSession(session);
        $("me-name").textContent = name;
        rememberName(s.userId, name);
      }
    }).catch(() => {});
  }
  refreshGroups();
  refreshBlocked();
  pollLoop(st);
  // Memberships change without a message (someone adds us to a quiet group): look again now
  // and then.
  st.timer = setInterval(() => {
    if (state !== st) {
      clearInterval(st.timer);
      return;
    }
    if (!document.hidden && Date.now() - st.lastGroupRefresh >= GROUP_REFRESH_MS - 1000) refreshGroups();
  }, GROUP_REFRESH_MS);
}

function stopApp() {
  if (state) {
    state.abort.abort();
    clearInterval(state.timer);
  }
  state = null;
  session = null;
  localStorage.removeItem(STORAGE_KEY);
  localStorage.removeItem(NOTICE_KEY);
  $("app-view").hidden = true;
  $("identity").hidden = true;
  $("sign-out").hidden = true;
  $("connection").hidden = true;
  $("banner").hidden = true;
  $("token-value").value = "";
  $("account-token").value = "";
  $("conversation-list").replaceChildren();
  convRows.clear();
  $("messages").replaceChildren();
  showAuth();
  updateTitle();
}

function showAuth() {
  $("auth-view").hidden = false;
  document.body.dataset.view = "auth";
  $("signup-username").focus();
}

// ---------------------------------------------------------------- wiring

function busy(form, on) {
  for (const control of form.querySelectorAll("button, input, textarea")) control.disabled = on;
}

$("signup-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const username = $("signup-username").value.trim();
  $("signup-error").textContent = "";
  if (!username) {
    $("signup-error").textContent = "Choose a username.";
    $("signup-username").focus();
    return;
  }
  busy(form, true);
  try {
    const data = await api("POST", "/v1/users/create", { body: { username }, token: "" });
    const userId = pick(data, "userId", "id");
    const token = pick(data, "token");
    if (typeof userId !== "string" || typeof token !== "string") {
      throw new ApiError(500, "bad_response", "The server did not return a user id and a token. Is it running in token mode?");
    }
    const s = { userId, username: pick(data, "username", "userName") ?? username, token };
    saveSession(s);
    localStorage.setItem(NOTICE_KEY, userId);
    form.reset();
    startApp(s);
    $("copy-id").focus();
  } catch (err) {
    $("signup-error").textContent = `Could not create the account: ${errorText(err)}`;
  } finally {
    busy(form, false);
  }
});

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const userId = $("signin-userid").value.trim();
  const token = $("signin-token").value.trim();
  $("signin-error").textContent = "";
  if (!userId || !token) {
    $("signin-error").textContent = "Paste both your user id and your token.";
    return;
  }
  busy(form, true);
  try {
    const user = await api("GET", `/v1/users/${enc(userId)}`, { token });
    // Reading messages is allowed only to the user itself: this proves the token is this user's.
    await api("GET", `/v1/messages/${enc(userId)}?timestamp=${Date.now()}`, { token });
    const s = { userId, username: pick(user, "username", "userName", "name") ?? "", token };
    saveSession(s);
    form.reset();
    startApp(s);
    $("copy-id").focus();
  } catch (err) {
    let text = errorText(err);
    if (err instanceof ApiError && err.status === 401) text = `The token was not accepted. ${text}`;
    else if (err instanceof ApiError && err.status === 403) text = `This token belongs to another user. ${text}`;
    else if (err instanceof ApiError && err.status === 404) text = `No user has this id. ${text}`;
    $("signin-error").textContent = `Could not sign in: ${text}`;
  } finally {
    busy(form, false);
  }
});

$("copy-id").addEventListener("click", async () => {
  const ok = await copyText(session.userId);
  $("copy-id").textContent = ok ? "Copied!" : "Select and copy";
  if (!ok) $("me-id").select();
  announce(ok ? "Your user id was copied." : "Copy failed: the id is selected, copy it with your keyboard.");
  setTimeout(() => { $("copy-id").textContent = "Copy id"; }, 2000);
});
$("me-id").addEventListener("focus", (event) => event.target.select());

for (const [buttonId, label] of [["token-copy", "Copy token"], ["account-token-copy", "Copy token"]]) {
  $(buttonId).addEventListener("click", async () => {
    const ok = await copyText(session.token);
    $(buttonId).textContent = ok ? "Copied!" : "Copy failed";
    announce(ok ? "Your token was copied. Keep it secret." : "Copy failed.");
    setTimeout(() => { $(buttonId).textContent = label; }, 2000);
  });
}
$("token-show").addEventListener("click", () => {
  const input = $("token-value");
  const show = input.type === "password";
  input.type = show ? "text" : "password";
  $("token-show").textContent = show ? "Hide" : "Show";
  $("token-show").setAttribute("aria-pressed", String(show));
});
$("token-dismiss").addEventListener("click", () => {
  localStorage.removeItem(NOTICE_KEY);
  $("token-notice").hidden = true;
  $("copy-id").focus();
});

$("sign-out").addEventListener("click", () => {
  const dialog = $("signout-dialog");
  if (typeof dialog.showModal === "function") dialog.showModal();
  else stopApp();
});
$("signout-dialog").addEventListener("close", () => {
  if ($("signout-dialog").returnValue === "confirm") stopApp();
});

$("banner-close").addEventListener("click", () => { $("banner").hidden = true; });
$("chat-error-close").addEventListener("click", () => {
  const conv = state?.conversations.get(state.selected);
  if (conv) conv.error = null;
  scheduleRender();
  $("composer-input").focus();
});

$("refresh").addEventListener("click", () => {
  refreshGroups();
  refreshBlocked();
  announce("Refreshing conversations.");
});

$("new-chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  busy(form, true);
  const ok = await openPrivate($("new-chat-id").value);
  busy(form, false);
  if (ok) form.reset();
  else $("new-chat-id").focus();
});

$("new-group-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  busy(form, true);
  const ok = await createGroup($("new-group-name").value);
  busy(form, false);
  if (ok) {
    form.reset();
    $("add-member-id").focus();
  } else {
    $("new-group-name").focus();
  }
});

$("add-member-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const conv = state.conversations.get(state.selected);
  if (!conv || conv.kind !== "group") return;
  busy(form, true);
  const ok = await addMember(conv.id, $("add-member-id").value);
  busy(form, false);
  if (ok) form.reset();
  $("add-member-id").focus();
});

$("members-toggle").addEventListener("click", () => {
  state.membersOpen = !state.membersOpen;
  const conv = state.conversations.get(state.selected);
  if (state.membersOpen && conv) loadGroup(conv.id);
  render();
  if (state.membersOpen) $("add-member-id").focus();
});

$("leave-group").addEventListener("click", () => {
  const conv = state.conversations.get(state.selected);
  if (conv?.kind === "group") removeMember(conv.id, session.userId);
});

$("block-toggle").addEventListener("click", () => {
  const conv = state.conversations.get(state.selected);
  if (conv?.kind === "private") setBlocked(conv.id, !state.blocked.has(conv.id));
});

$("back").addEventListener("click", () => {
  const key = state.selected;
  setAppView("list");
  render();
  if (key) $("conversation-list").querySelector(`[data-conv="${CSS.escape(key)}"]`)?.focus();
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state && appView() === "chat" && NARROW_QUERY.matches && !$("signout-dialog").open) {
    $("back").click();
  }
});

const composerInput = $("composer-input");
function autosize() {
  composerInput.style.height = "auto";
  composerInput.style.height = `${Math.min(composerInput.scrollHeight + 2, 160)}px`;
}
composerInput.addEventListener("input", autosize);
composerInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const conv = state?.conversations.get(state.selected);
  const text = composerInput.value;
  if (!conv || !text.trim()) return;
  if ([...text].length > 4096) {
    conv.error = "A message can be at most 4096 characters.";
    scheduleRender();
    return;
  }
  composerInput.value = "";
  autosize();
  sendMessage(conv, text);
  composerInput.focus();
});

document.addEventListener("visibilitychange", () => {
  if (!state || document.hidden) return;
  scheduleRender();
  if (Date.now() - state.lastGroupRefresh > 5000) refreshGroups();
});
NARROW_QUERY.addEventListener("change", () => { if (state) render(); });

// Another tab signed in or out: follow it.
window.addEventListener("storage", (event) => {
  if (event.key !== STORAGE_KEY) return;
  const s = loadSession();
  if (!s) {
    if (state) stopApp();
  } else if (!session || s.userId !== session.userId || s.token !== session.token) {
    if (state) {
      state.abort.abort();
      clearInterval(state.timer);
    }
    startApp(s);
  }
});

// ---------------------------------------------------------------- boot

const saved = loadSession();
if (saved) startApp(saved);
else showAuth();
