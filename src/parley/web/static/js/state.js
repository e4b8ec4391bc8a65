// The page's one store. Everything that changes while the page runs lives here; modules keep
// no state of their own.

import { tsNumber } from "./dom.js";

const STORAGE_KEY = "parley.session";
const NOTICE_KEY = "parley.tokenNoticeFor";

export const store = {
  session: null, // {userId, username, token} of the signed-in user, or null
  chat: null, // what the page knows of that user's conversations: freshChat(), or null
  names: new Map(), // userId -> {name, promise, missing, failedAt}
  renderers: [], // view functions, called in order by render.js
  renderQueued: false,
};

export function freshChat() {
  return {
    conversations: new Map(), // key ("u:<id>" | "g:<id>") -> conversation
    seen: new Set(), // messageIds already placed
    groups: new Map(), // groupId -> {groupId, groupName, members}
    blocked: new Set(), // user ids I block
    selected: null, // conversation key
    cursor: null, // nextTimestamp for the next poll
    caughtUp: false,
    abort: new AbortController(), // aborted when this session ends
    lastGroupRefresh: 0,
    groupRefresh: null, // the running refresh of the group list, if any
    pollRequest: null,
    timer: null,
    groupsLoaded: false,
    membersOpen: false,
    discovering: new Set(), // group ids being loaded after a message revealed them
    rows: new Map(), // conversation key -> {li, signature}: the list's rendered rows
    shownKey: null, // the conversation whose messages are on screen
    shownMessages: new Map(), // message key -> element
    media: new Map(), // mediaId -> promise of {type, size, url}: files fetched this session
  };
}

// ---------------------------------------------------------------- conversations

export function ensureConversation(key) {
  const chat = store.chat;
  let conv = chat.conversations.get(key);
  if (!conv) {
    const kind = key.startsWith("g:") ? "group" : "private";
    conv = {
      key, kind, id: key.slice(2), messages: [], unread: 0, unreadCapped: false, lastTs: 0, error: null,
      readUpTo: 0, // my read marker (unix ms), as the server keeps it
      peerReadUpTo: 0, // private: how far the other user has read (read ticks)
      history: null, // null: not loaded; else {hasOlder, nextBefore, loading}
    };
    chat.conversations.set(key, conv);
  }
  return conv;
}

export function selectedConversation() {
  const chat = store.chat;
  return chat?.selected ? chat.conversations.get(chat.selected) ?? null : null;
}

export function convKeyFor(message) {
  if (message.type === "group") return `g:${message.recipientId}`;
  const other = message.senderId === store.session.userId ? message.recipientId : message.senderId;
  return `u:${other}`;
}

const sortKey = (m) => (m.pending ? Number.MAX_SAFE_INTEGER : tsNumber(m.timestamp));

// Messages stay in timestamp order; sends still pending go last.
export function insertSorted(list, item) {
  const k = sortKey(item);
  let i = list.length;
  while (i > 0 && sortKey(list[i - 1]) > k) i -= 1;
  list.splice(i, 0, item);
  return i;
}

// ---------------------------------------------------------------- kept in localStorage

export const sessionKey = STORAGE_KEY;

export function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    if (s && typeof s.userId === "string" && typeof s.token === "string") return s;
  } catch { /* corrupt entry: ignore */ }
  return null;
}

export function saveSession(s) {
  localStorage.setItem(STORAGE_KEY, JSON.stringify({ userId: s.userId, username: s.username, token: s.token }));
}

export function forgetSession() {
  localStorage.removeItem(STORAGE_KEY);
  localStorage.removeItem(NOTICE_KEY);
}

// The "save your token" notice shows until dismissed, for the account just created.
export const tokenNotice = {
  showFor: (userId) => localStorage.setItem(NOTICE_KEY, userId),
  shownFor: (userId) => localStorage.getItem(NOTICE_KEY) === userId,
  dismiss: () => localStorage.removeItem(NOTICE_KEY),
};
