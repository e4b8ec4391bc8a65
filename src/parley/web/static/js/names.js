// Usernames by user id: shown from the cache, looked up in the background when unknown, and
// updated in place on the page when the answer comes.

import { ApiError, getUser } from "./api.js";
import { el, shortId } from "./dom.js";
import { scheduleRender } from "./render.js";
import { store } from "./state.js";

const NAME_RETRY_MS = 30000;

export function rememberName(id, name) {
  const entry = store.names.get(id) || {};
  if (entry.name === name) return;
  entry.name = name;
  entry.missing = false;
  store.names.set(id, entry);
  refreshNameNodes(id);
}

export function displayName(id) {
  const session = store.session;
  if (session && id === session.userId) return session.username || "You";
  const entry = store.names.get(id);
  if (entry?.name) return entry.name;
  if (entry?.missing) return `Unknown user ${shortId(id)}`;
  if (store.chat) resolveUser(id);
  return shortId(id);
}

export function resolveUser(id) {
  let entry = store.names.get(id);
  if (entry?.name || entry?.missing) return Promise.resolve(entry.name ?? null);
  if (entry?.promise) return entry.promise;
  if (entry?.failedAt && Date.now() - entry.failedAt < NAME_RETRY_MS) return Promise.resolve(null);
  entry = entry || {};
  entry.promise = getUser(id)
    .then((user) => {
      entry.name = user.username;
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
  store.names.set(id, entry);
  return entry.promise;
}

// Elements that show a user's name carry data-user-id, so a late answer updates them.
export function nameNode(id, tag = "span", className = "") {
  return el(tag, { className, dataset: { userId: id } }, displayName(id));
}

function refreshNameNodes(id) {
  if (!store.chat) return;
  const entry = store.names.get(id);
  if (!entry?.name && !entry?.missing) return;
  for (const node of document.querySelectorAll(`[data-user-id="${CSS.escape(id)}"]`)) {
    node.textContent = displayName(id);
  }
  scheduleRender();
}

export function convTitle(conv) {
  const session = store.session;
  if (conv.kind === "group") return store.chat.groups.get(conv.id)?.groupName ?? `Group ${shortId(conv.id)}`;
  if (conv.id === session.userId) return `${session.username || "You"} (you)`;
  return displayName(conv.id);
}
