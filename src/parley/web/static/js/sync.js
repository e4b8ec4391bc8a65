// Keeping the store in step with the server: the long-poll loop, history resyncs, the group
// list and the blocked list. Views draw what lands in the store.

import {
  ApiError, REQUEST_TIMEOUT_MS, errorText, getBlocked, getConversations, getGroup, getHistory, getMessages,
  getUserGroups, postRead,
} from "./api.js";
import { announce, sleep, tsNumber } from "./dom.js";
import { convTitle, displayName } from "./names.js";
import { onScreen, scheduleRender, setAppView, updateTitle } from "./render.js";
import { convKeyFor, ensureConversation, insertSorted, store } from "./state.js";
import { sessionRejected, setConnection, showBanner } from "./status.js";

const POLL_WAIT_SECONDS = 25;
const POLL_CLIENT_TIMEOUT_MS = (POLL_WAIT_SECONDS + 20) * 1000;
const GROUP_REFRESH_MS = 20000;

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
export function ingest(messages, { live }) {
  const { chat, session } = store;
  const fresh = [];
  for (const m of messages) {
    if (chat.seen.has(m.messageId)) continue;
    chat.seen.add(m.messageId);
    const conv = ensureConversation(convKeyFor(m));
    if (m.senderId === session.userId) supersedeLocalCopy(conv, m);
    conv.typing?.delete(m.senderId); // the message they were typing arrived
    insertSorted(conv.messages, { ...m, key: m.messageId });
    conv.lastTs = Math.max(conv.lastTs, tsNumber(m.timestamp));
    if (m.type === "group" && !chat.groups.has(m.recipientId)) discoverGroup(m.recipientId, live);
    if (m.senderId !== session.userId && live) {
      const visible = onScreen(conv);
      if (!visible) conv.unread += 1;
      fresh.push({ m, conv, visible });
    }
  }
  const last = fresh.at(-1);
  if (last) {
    if (!last.visible) {
      const where = last.conv.kind === "group" ? ` in ${convTitle(last.conv)}` : "";
      announce(`New message from ${displayName(last.m.senderId)}${where}: ${last.m.message}`);
    }
    updateTitle();
  }
  scheduleRender();
  return fresh;
}

// ---------------------------------------------------------------- conversations and history

const HISTORY_PAGE = 50;
const LIST_PAGE = 200;

// The server's conversation list: each one's newest message, unread count and read markers,
// and a cursor to poll from (what is older comes from each conversation's history, page by
// page, when it is opened). False if the list could not be read: then the poll reads the
// whole account from the start, as before.
async function loadConversations(st) {
  let listing;
  try {
    listing = await getConversations(store.session.userId, new URLSearchParams({ limit: String(LIST_PAGE) }),
      st.abort.signal);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) sessionRejected(err);
    return false;
  }
  if (store.chat !== st) return false;
  for (const c of listing.conversations) {
    const conv = ensureConversation(`${c.type === "group" ? "g" : "u"}:${c.conversationId}`);
    if (c.type === "group" && !st.groups.has(c.conversationId)) {
      st.groups.set(c.conversationId, { groupId: c.conversationId, groupName: c.name, members: [] });
    }
    conv.unread = c.unreadCount;
    conv.unreadCapped = c.unreadCapped;
    conv.readUpTo = tsNumber(c.readUpTo);
    conv.peerReadUpTo = tsNumber(c.peerReadUpTo ?? "0");
    if (c.lastMessage) ingest([c.lastMessage], { live: false });
  }
  st.cursor = listing.nextTimestamp;
  st.caughtUp = true;
  updateTitle();
  scheduleRender();
  return true;
}

// One page of a conversation's history: the newest page the first time, then older ones.
export async function loadHistory(conv, { older = false } = {}) {
  const st = store.chat;
  const state = conv.history ?? { hasOlder: true, nextBefore: null, loading: false };
  if (state.loading || (older && !state.hasOlder) || (!older && conv.history)) return;
  state.loading = true;
  conv.history = state;
  scheduleRender();
  const params = new URLSearchParams({ limit: String(HISTORY_PAGE) });
  if (older && state.nextBefore) params.set("before", state.nextBefore);
  try {
    const page = await getHistory(store.session.userId, conv.id, params, st.abort.signal);
    if (store.chat !== st) return;
    ingest(page.messages, { live: false });
    if (older || state.nextBefore === null) {
      state.nextBefore = page.nextBefore ?? state.nextBefore;
      state.hasOlder = page.hasMore;
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) sessionRejected(err);
    else if (!(err?.name === "AbortError")) conv.error = `Could not load older messages: ${errorText(err)}`;
  } finally {
    state.loading = false;
    scheduleRender();
  }
}

// The open conversation is read up to its newest message: tell the server (the marker only
// moves forward; my other devices get a read event, the other user a receipt).
export function markRead(conv) {
  const last = conv.messages.filter((m) => m.messageId && !m.pending).at(-1);
  if (!last) return;
  const ts = tsNumber(last.timestamp);
  if (ts <= conv.readUpTo) return;
  conv.readUpTo = ts;
  postRead(store.session.userId, conv.id, last.timestamp).catch((err) => {
    if (err instanceof ApiError && err.status === 401) sessionRejected(err);
  });
}

function unreadAfter(conv, readUpTo) {
  const me = store.session.userId;
  return conv.messages.filter((m) => m.senderId !== me && m.messageId && tsNumber(m.timestamp) > readUpTo).length;
}

// ---------------------------------------------------------------- change events

const GROUP_EVENTS = new Set(["member_added", "member_removed", "role_changed", "group_renamed"]);
const TYPING_MS = 5000;

function findMessage(messageId) {
  for (const conv of store.chat.conversations.values()) {
    const m = conv.messages.find((x) => x.messageId === messageId);
    if (m) return m;
  }
  return null;
}

// Edits, deletes, typing notices and group changes, as the poll delivers them.
export function applyEvents(events) {
  const { chat, session } = store;
  let groupsChanged = false;
  for (const e of events) {
    if (e.type === "message_edited") {
      const m = findMessage(e.messageId);
      if (m && !m.deleted) Object.assign(m, { message: e.message ?? m.message, editedAt: e.editedAt });
    } else if (e.type === "message_deleted") {
      const m = findMessage(e.messageId);
      if (m) {
        m.deleted = true;
        delete m.message;
      }
    } else if (e.type === "typing") {
      if (e.userId === session.userId) continue;
      const key = e.conversationId.startsWith("g_") ? `g:${e.conversationId}` : `u:${e.conversationId}`;
      if (key.startsWith("g:") && !chat.groups.has(e.conversationId)) continue;
      const conv = ensureConversation(key);
      conv.typing = conv.typing ?? new Map();
      conv.typing.set(e.userId, Date.now() + TYPING_MS); // by this browser's clock
      setTimeout(scheduleRender, TYPING_MS + 50);
    } else if (e.type === "read") {
      // my own marker, moved by another device (or this one)
      const conv = chat.conversations.get(`${e.conversationId.startsWith("g_") ? "g" : "u"}:${e.conversationId}`);
      const upTo = tsNumber(e.readUpTo);
      if (conv && upTo > conv.readUpTo) {
        conv.readUpTo = upTo;
        if (upTo >= conv.lastTs) conv.unread = 0;
        else if (conv.history) conv.unread = Math.min(conv.unread, unreadAfter(conv, upTo));
        conv.unreadCapped = conv.unreadCapped && conv.unread > 0;
        updateTitle();
      }
    } else if (e.type === "receipt") {
      const conv = chat.conversations.get(`u:${e.conversationId}`);
      const upTo = tsNumber(e.readUpTo);
      if (conv && upTo > conv.peerReadUpTo) conv.peerReadUpTo = upTo;
    } else if (GROUP_EVENTS.has(e.type)) {
      groupsChanged = true;
    }
  }
  if (groupsChanged) refreshGroups();
  if (events.length) scheduleRender();
}

async function pollLoop(st) {
  let backoff = 1000;
  setConnection("connecting");
  while (store.chat === st && !st.abort.signal.aborted) {
    const params = new URLSearchParams({ include: "sent,events" });
    if (st.cursor !== null) params.set("timestamp", st.cursor);
    if (st.caughtUp) params.set("wait", String(POLL_WAIT_SECONDS));
    // One controller per request, so restartPoll() can cut a long-poll short without ending
    // the session; the cursor only moves on a complete answer, so nothing is lost.
    const request = new AbortController();
    const stop = () => request.abort();
    st.abort.signal.addEventListener("abort", stop, { once: true });
    st.pollRequest = request;
    try {
      const page = await getMessages(store.session.userId, params, {
        signal: request.signal,
        timeoutMs: st.caughtUp ? POLL_CLIENT_TIMEOUT_MS : REQUEST_TIMEOUT_MS,
      });
      if (store.chat !== st) return;
      ingest(page.messages, { live: st.caughtUp });
      applyEvents(page.events ?? []);
      st.cursor = page.nextTimestamp;
      backoff = 1000;
      setConnection("live");
      if (page.hasMore) continue; // another page is waiting: fetch it at once
      if (!st.caughtUp) {
        st.caughtUp = true;
        scheduleRender();
      }
    } catch (err) {
      if (store.chat !== st || st.abort.signal.aborted) return;
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
export function restartPoll() {
  const chat = store.chat;
  if (chat?.caughtUp && chat.pollRequest) chat.pollRequest.abort();
}

// A group we were just added to: its history is visible to us now but older than our cursor;
// read its newest page (older ones come as the user scrolls back).
async function resyncHistory(st) {
  for (const conv of [...st.conversations.values()]) {
    if (store.chat !== st) return;
    if (conv.kind === "group" && !conv.history) await loadHistory(conv);
  }
}

// ---------------------------------------------------------------- groups

export async function loadGroup(groupId) {
  const st = store.chat;
  try {
    const group = await getGroup(groupId, st.abort.signal);
    if (store.chat !== st) return null;
    st.groups.set(groupId, group);
    ensureConversation(`g:${groupId}`);
    scheduleRender();
    return group;
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 403)) {
      // Gone, or we are no longer a member.
      if (store.chat === st) dropGroup(groupId);
    }
    return null;
  }
}

// A group we did not know about (we were just added): load it, and since its history is now
// visible to us but older than our cursor, read the history once more.
function discoverGroup(groupId, resync) {
  const st = store.chat;
  if (st.discovering.has(groupId)) return;
  st.discovering.add(groupId);
  loadGroup(groupId).then((group) => {
    st.discovering.delete(groupId);
    if (group && resync && store.chat === st) {
      restartPoll();
      resyncHistory(st);
    }
  });
}

export function refreshGroups() {
  const st = store.chat;
  if (st.groupRefresh) return st.groupRefresh;
  st.lastGroupRefresh = Date.now();
  st.groupRefresh = (async () => {
    try {
      const { groups } = await getUserGroups(store.session.userId, st.abort.signal);
      if (store.chat !== st) return;
      const ids = new Set();
      let discovered = false;
      const loads = [];
      for (const { groupId, groupName } of groups) {
        ids.add(groupId);
        if (!st.groups.has(groupId)) {
          if (st.groupsLoaded) discovered = true;
          st.groups.set(groupId, { groupId, groupName, members: [] });
          ensureConversation(`g:${groupId}`);
          loads.push(loadGroup(groupId));
        } else if (st.selected === `g:${groupId}`) {
          loads.push(loadGroup(groupId)); // keep the open group's members current
        }
      }
      for (const id of [...st.groups.keys()]) if (!ids.has(id)) dropGroup(id);
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
      st.groupRefresh = null;
    }
  })();
  return st.groupRefresh;
}

export function dropGroup(groupId) {
  const chat = store.chat;
  chat.groups.delete(groupId);
  const key = `g:${groupId}`;
  const conv = chat.conversations.get(key);
  if (conv) {
    for (const m of conv.messages) if (m.messageId) chat.seen.delete(m.messageId);
    chat.conversations.delete(key);
  }
  if (chat.selected === key) {
    chat.selected = null;
    setAppView("list");
  }
  scheduleRender();
}

// ---------------------------------------------------------------- blocks

export async function refreshBlocked() {
  const st = store.chat;
  try {
    const { blockedUserIds } = await getBlocked(store.session.userId, st.abort.signal);
    if (store.chat !== st) return;
    st.blocked = new Set(blockedUserIds);
    scheduleRender();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) sessionRejected(err);
  }
}

// ---------------------------------------------------------------- the whole session

export async function startSync(st) {
  refreshGroups();
  refreshBlocked();
  await loadConversations(st);
  if (store.chat !== st) return;
  const open = st.selected ? st.conversations.get(st.selected) : null;
  if (open) loadHistory(open);
  pollLoop(st);
  // Memberships change without a message (someone adds us to a quiet group): look again now
  // and then.
  st.timer = setInterval(() => {
    if (store.chat !== st) {
      clearInterval(st.timer);
      return;
    }
    if (!document.hidden && Date.now() - st.lastGroupRefresh >= GROUP_REFRESH_MS - 1000) refreshGroups();
  }, GROUP_REFRESH_MS);
}

export function stopSync(st) {
  st.abort.abort();
  clearInterval(st.timer);
}
