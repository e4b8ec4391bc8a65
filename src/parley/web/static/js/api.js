// The API client: one fetch wrapper, one error shape, and a function per route the page uses.
// Response shapes are the server's (src/parley/http/schemas.py); nothing else is accepted.

import { store } from "./state.js";

export const REQUEST_TIMEOUT_MS = 20000;
const enc = encodeURIComponent;

// Every failure the page sees: status 0 for network errors and timeouts, else the HTTP status
// with the server's {"error": {"code", "message"}}.
export class ApiError extends Error {
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

// `token` overrides the signed-in user's token ("" sends none).
export async function api(method, path, { body, headers = {}, signal, token, timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
  const h = { Accept: "application/json", ...headers };
  const bearer = token ?? store.session?.token;
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
  } catch {
    if (signal?.aborted) throw new DOMException("aborted", "AbortError");
    if (controller.signal.aborted) throw new ApiError(0, "timeout", "The server took too long to answer.");
    throw new ApiError(0, "network_error", "Cannot reach the server. Check your connection.");
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onOuterAbort);
  }

  let data = null;
  try { data = JSON.parse(text); } catch { data = null; } // a proxy in front may answer in HTML
  if (!response.ok) {
    const err = data?.error;
    throw new ApiError(
      response.status,
      err ? err.code : `http_${response.status}`,
      err ? err.message : `${response.status} ${response.statusText || "error"}`,
      parseRetryAfter(response.headers.get("Retry-After")),
    );
  }
  return data;
}

// The server's message, capitalised, with its error code: "The receiver has blocked you (blocked)".
export function errorText(err) {
  const raw = String((err instanceof ApiError ? err.message : err?.message || err) || "Unknown error");
  const text = raw.charAt(0).toUpperCase() + raw.slice(1);
  if (err instanceof ApiError && err.code && !err.code.startsWith("http_") && err.status !== 0) {
    return `${text} (${err.code})`;
  }
  return text;
}

// ---------------------------------------------------------------- routes

// -> {userId, username, token} (no token when the server runs in open mode)
export const createUser = (username) => api("POST", "/v1/users/create", { body: { username }, token: "" });

// -> {userId, username}
export const getUser = (userId, options = {}) => api("GET", `/v1/users/${enc(userId)}`, options);

// -> {messages: [{messageId, type, senderId, recipientId, message, timestamp}], nextTimestamp, hasMore}
export const getMessages = (userId, params, options = {}) =>
  api("GET", `/v1/messages/${enc(userId)}?${params}`, options);

// body: {senderId, receiverId | groupId, message} -> the stored message
export const postMessage = (kind, body, idempotencyKey, signal) =>
  api("POST", `/v1/messages/send?type=${kind}`, { body, headers: { "Idempotency-Key": idempotencyKey }, signal });

// op=edit {message} / op=delete -> the message as it now is (editedAt, or deleted: true)
export const editMessage = (messageId, message) =>
  api("POST", `/v1/messages/${enc(messageId)}?op=edit`, { body: { message } });
export const deleteMessage = (messageId) => api("POST", `/v1/messages/${enc(messageId)}?op=delete`);

// {conversationId} -> {conversationId, expiresAt}: the others see "typing" for 5 seconds
export const postTyping = (userId, conversationId) =>
  api("POST", `/v1/users/${enc(userId)}/typing`, { body: { conversationId } });

// Conversations (SPEC §7). -> {conversations: [{conversationId, type, name, lastMessage,
// unreadCount, unreadCapped, readUpTo, peerReadUpTo?}], hasMore, nextTimestamp}; polling from
// nextTimestamp delivers every message newer than what the conversations' histories hold.
export const getConversations = (userId, params, signal) =>
  api("GET", `/v1/users/${enc(userId)}/conversations?${params}`, { signal });

// -> {messages (ascending), hasMore, nextBefore}: one page of one conversation, newest first
export const getHistory = (userId, conversationId, params, signal) =>
  api("GET", `/v1/users/${enc(userId)}/conversations/${enc(conversationId)}/messages?${params}`, { signal });

// {conversationId, timestamp} -> {conversationId, readUpTo}: the marker only moves forward
export const postRead = (userId, conversationId, timestamp) =>
  api("POST", `/v1/users/${enc(userId)}/read`, { body: { conversationId, timestamp } });

// -> {userId, groups: [{groupId, groupName}]}
export const getUserGroups = (userId, signal) => api("GET", `/v1/users/${enc(userId)}/groups`, { signal });

// -> {userId, blockedUserIds}
export const getBlocked = (userId, signal) => api("GET", `/v1/users/${enc(userId)}/blocked`, { signal });

export const setBlock = (userId, otherId, block) =>
  api("POST", `/v1/users/${enc(userId)}?op=${block ? "block" : "unblock"}`, { body: { blockedUserId: otherId } });

// -> {groupId, groupName}
export const createGroup = (groupName) => api("POST", "/v1/groups/create", { body: { groupName } });

// -> {groupId, groupName, members: [userId], roles: {userId: "owner"|"admin"|"member"}}
export const getGroup = (groupId, signal) => api("GET", `/v1/groups/${enc(groupId)}`, { signal });

// op: "add" | "remove" | "promote" | "demote"
export const changeMember = (groupId, userId, op) =>
  api("POST", `/v1/groups/${enc(groupId)}?op=${op}`, { body: { userId } });

// Devices, passwords, deletion (SPEC §7).
export const linkDevice = (userId, deviceName) =>
  api("POST", `/v1/users/${enc(userId)}/tokens`, { body: { deviceName } });
export const getDevices = (userId) => api("GET", `/v1/users/${enc(userId)}/tokens`);
export const revokeDevice = (userId, tokenId) =>
  api("DELETE", `/v1/users/${enc(userId)}/tokens/${enc(tokenId)}`);
export const setPassword = (userId, password, currentPassword) =>
  api("POST", `/v1/users/${enc(userId)}/password`, {
    body: currentPassword ? { password, currentPassword } : { password },
  });
export const signInWithPassword = (userId, password, deviceName) =>
  api("POST", "/v1/sessions", { body: { userId, password, deviceName }, token: "" });
export const deleteAccount = (userId, password) =>
  api("DELETE", `/v1/users/${enc(userId)}`, { body: password ? { password } : {} });

// Attachments (SPEC §7). Files are sent and fetched as raw bytes, not JSON.
const FILE_TIMEOUT_MS = 300000;

async function rawRequest(method, path, { body, contentType, signal } = {}) {
  const headers = {};
  if (store.session?.token) headers.Authorization = `Bearer ${store.session.token}`;
  if (contentType) headers["Content-Type"] = contentType;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException("timeout", "TimeoutError")), FILE_TIMEOUT_MS);
  const onOuterAbort = () => controller.abort(signal.reason);
  if (signal) {
    if (signal.aborted) controller.abort(signal.reason);
    else signal.addEventListener("abort", onOuterAbort, { once: true });
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal: controller.signal, credentials: "same-origin" });
  } catch {
    if (signal?.aborted) throw new DOMException("aborted", "AbortError");
    throw new ApiError(0, "network_error", "Cannot reach the server. Check your connection.");
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onOuterAbort);
  }
  if (!response.ok) {
    let err = null;
    try { err = (await response.json())?.error; } catch { err = null; }
    throw new ApiError(
      response.status,
      err ? err.code : `http_${response.status}`,
      err ? err.message : `${response.status} ${response.statusText || "error"}`,
      parseRetryAfter(response.headers.get("Retry-After")),
    );
  }
  return response;
}

// file: a File -> {mediaId, contentType, size, sha256}
export async function uploadMedia(file, signal) {
  const response = await rawRequest("POST", "/v1/media", {
    body: file, contentType: file.type || "application/octet-stream", signal,
  });
  return response.json();
}

// -> the Response: headers only for HEAD, the bytes for GET
export const fetchMedia = (mediaId, method = "GET", signal) =>
  rawRequest(method, `/v1/media/${enc(mediaId)}`, { signal });
