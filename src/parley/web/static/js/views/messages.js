// The message pane: the open conversation's header and messages, the composer, and sending
// (with retries under one Idempotency-Key, so a retry never stores a message twice).

import { ApiError, deleteMessage, editMessage, errorText, postMessage, postTyping, uploadMedia } from "../api.js";
import { $, el, formatTime, sleep, tsNumber, uuid } from "../dom.js";
import { convTitle, displayName, nameNode } from "../names.js";
import { onScreen, scheduleRender, updateTitle } from "../render.js";
import { insertSorted, selectedConversation, store } from "../state.js";
import { sessionRejected } from "../status.js";
import { loadHistory, markRead } from "../sync.js";
import { attachmentsElement, pendingFilesElement } from "./attachments.js";

const SEND_ATTEMPTS = 4;
const MAX_MESSAGE_CHARS = 4096;

const TYPING_EVERY_MS = 3000; // while typing, tell the others at most this often

const stateOf = (m) => (m.pending ? "pending" : m.failed ? "failed" : "sent");
// A message's element is rebuilt whenever this changes.
const versionOf = (m) => [stateOf(m), m.deleted ? "deleted" : "", m.editedAt ?? "",
  m.editing ? "editing" : "", m.seenByPeer ? "seen" : "", m.message ?? ""].join("|");

function discard(conv, m) {
  const i = conv.messages.indexOf(m);
  if (i >= 0) conv.messages.splice(i, 1);
  if (conv.error === m.failure) conv.error = null;
  scheduleRender();
}

function messageElement(conv, m) {
  const mine = m.senderId === store.session.userId;
  const classes = ["msg", mine ? "mine" : "theirs"];
  if (m.pending) classes.push("pending");
  if (m.failed) classes.push("failed");
  const meta = el("div", { className: "msg-meta" },
    mine ? el("span", { className: "msg-sender" }, "You") : nameNode(m.senderId, "span", "msg-sender"),
    m.pending || m.failed ? null : el("time", { datetime: new Date(tsNumber(m.timestamp)).toISOString() }, formatTime(m.timestamp)));
  if (m.editedAt && !m.deleted) meta.append(el("span", { className: "msg-edited", title: `edited ${formatTime(m.editedAt)}` }, "edited"));
  if (mine && conv.kind === "private" && conv.id !== store.session.userId && m.messageId && !m.pending && !m.failed) {
    // read ticks: the other user's read marker (peerReadUpTo, receipt events) has passed it
    meta.append(m.seenByPeer
      ? el("span", { className: "msg-tick read", title: "Read" }, "✓✓ Read")
      : el("span", { className: "msg-tick", title: "Sent" }, "✓"));
  }
  let body;
  if (m.deleted) body = el("p", { className: "msg-text msg-deleted" }, "This message was deleted.");
  else if (m.editing) body = editForm(conv, m);
  else body = el("p", { className: "msg-text" }, m.message);
  const node = el("article", { className: classes.join(" "), dataset: { key: m.key, messageId: m.messageId } },
    meta, body);
  if (!m.deleted && m.attachments?.length) node.append(attachmentsElement(m.attachments));
  else if (m.files?.length) node.append(pendingFilesElement(m.files));
  if (mine && m.messageId && !m.pending && !m.failed && !m.deleted && !m.editing) {
    node.append(el("div", { className: "msg-actions" },
      el("button", { type: "button", className: "btn btn-small msg-edit", onclick: () => startEdit(m) }, "Edit"),
      el("button", { type: "button", className: "btn btn-small msg-delete", onclick: () => removeMessage(conv, m) }, "Delete")));
  }
  if (m.pending) node.append(el("div", { className: "msg-status" }, "Sending…"));
  if (m.failed) {
    node.append(el("div", { className: "msg-status" },
      el("span", { className: "msg-failure" }, "Not sent."),
      el("button", { type: "button", className: "btn btn-small", onclick: () => deliver(conv, m) }, "Retry"),
      el("button", { type: "button", className: "btn btn-small", onclick: () => discard(conv, m) }, "Discard")));
  }
  node.dataset.state = stateOf(m);
  node.dataset.version = versionOf(m);
  return node;
}

// ---------------------------------------------------------------- edit and delete

function startEdit(m) {
  m.editing = true;
  scheduleRender();
}

function editForm(conv, m) {
  const input = el("textarea", { className: "msg-edit-input", rows: 2, maxLength: MAX_MESSAGE_CHARS, "aria-label": "Edit message" });
  input.value = m.message ?? "";
  const cancel = () => {
    m.editing = false;
    scheduleRender();
  };
  const form = el("form", { className: "msg-edit-form", onsubmit: (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    saveEdit(conv, m, text);
  } },
  input,
  el("button", { type: "submit", className: "btn btn-small msg-save" }, "Save"),
  el("button", { type: "button", className: "btn btn-small", onclick: cancel }, "Cancel"));
  setTimeout(() => input.focus(), 0);
  return form;
}

async function saveEdit(conv, m, text) {
  try {
    const changed = await editMessage(m.messageId, text);
    Object.assign(m, { message: changed.message, editedAt: changed.editedAt, editing: false });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) sessionRejected(err);
    conv.error = `Could not edit the message. Server says: ${errorText(err)}`;
    m.editing = false;
  }
  scheduleRender();
}

async function removeMessage(conv, m) {
  try {
    await deleteMessage(m.messageId);
    m.deleted = true;
    delete m.message;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) sessionRejected(err);
    conv.error = `Could not delete the message. Server says: ${errorText(err)}`;
  }
  scheduleRender();
}

// ---------------------------------------------------------------- typing

function renderTyping(conv) {
  const line = $("typing-line");
  const now = Date.now();
  const typers = conv.typing ? [...conv.typing].filter(([, until]) => until > now).map(([id]) => id) : [];
  if (conv.typing) for (const [id, until] of [...conv.typing]) if (until <= now) conv.typing.delete(id);
  const text = typers.length === 0 ? ""
    : typers.length === 1 ? `${displayName(typers[0])} is typing…`
    : `${typers.map(displayName).join(", ")} are typing…`;
  line.hidden = !text;
  if (line.textContent !== text) line.textContent = text;
}

let lastTyping = { key: null, at: 0 };

function typed() {
  const conv = store.chat && selectedConversation();
  if (!conv || !$("composer-input").value.trim()) return;
  const now = Date.now();
  if (lastTyping.key === conv.key && now - lastTyping.at < TYPING_EVERY_MS) return;
  lastTyping = { key: conv.key, at: now };
  postTyping(store.session.userId, conv.id).catch(() => {}); // a hint: losing one is fine
}

function renderMessages(conv) {
  const chat = store.chat;
  const list = $("messages");
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const heightBefore = list.scrollHeight;
  const topBefore = list.scrollTop;
  let addedAbove = false;
  if (conv.kind === "private") {
    const me = store.session.userId;
    for (const m of conv.messages) {
      if (m.senderId === me) m.seenByPeer = Boolean(m.messageId) && tsNumber(m.timestamp) <= conv.peerReadUpTo;
    }
  }
  const older = $("load-older");
  older.hidden = !conv.history?.hasOlder;
  older.disabled = Boolean(conv.history?.loading);
  const rebuild = chat.shownKey !== conv.key;
  if (rebuild) {
    list.setAttribute("aria-busy", "true");
    list.replaceChildren();
    chat.shownMessages.clear();
    chat.shownKey = conv.key;
  }
  // Remove elements whose message is gone or changed state; then insert in order.
  const byKey = new Map(conv.messages.map((m) => [m.key, m]));
  for (const [key, node] of chat.shownMessages) {
    const m = byKey.get(key);
    if (!m || node.dataset.version !== versionOf(m)) {
      node.remove();
      chat.shownMessages.delete(key);
    }
  }
  let previous = null;
  for (const m of conv.messages) {
    let node = chat.shownMessages.get(m.key);
    if (!node) {
      node = messageElement(conv, m);
      chat.shownMessages.set(m.key, node);
      if (previous) previous.after(node);
      else {
        addedAbove = addedAbove || list.firstChild !== null;
        list.prepend(node);
      }
    } else if (previous && previous.nextSibling !== node) {
      previous.after(node);
    }
    previous = node;
  }
  if (rebuild) list.removeAttribute("aria-busy");
  if (rebuild || nearBottom) list.scrollTop = list.scrollHeight;
  else if (addedAbove) list.scrollTop = topBefore + (list.scrollHeight - heightBefore); // older page: stay put
}

export function renderChat() {
  const conv = selectedConversation();
  $("chat-empty").hidden = Boolean(conv);
  $("chat-main").hidden = !conv;
  if (!conv) {
    store.chat.shownKey = null;
    return;
  }
  if (conv.unread && onScreen(conv)) {
    conv.unread = 0;
    conv.unreadCapped = false;
    updateTitle();
    scheduleRender(); // the list's unread badge
  }
  if (onScreen(conv)) markRead(conv);
  $("chat-title").textContent = convTitle(conv);
  if (conv.kind === "group") {
    const count = store.chat.groups.get(conv.id)?.members.length ?? 0;
    $("chat-subtitle").textContent = `Group · ${count} member${count === 1 ? "" : "s"}`;
  } else {
    $("chat-subtitle").textContent = `User id ${conv.id}`;
  }
  renderTyping(conv);
  $("chat-error").hidden = !conv.error;
  if ($("chat-error-text").textContent !== (conv.error || "")) $("chat-error-text").textContent = conv.error || "";
  renderMessages(conv);
}

// ---------------------------------------------------------------- sending

function sendMessage(conv, text, files = []) {
  const item = {
    files,
    key: `local:${uuid()}`,
    idempotencyKey: uuid(),
    pending: true,
    failed: false,
    type: conv.kind,
    senderId: store.session.userId,
    recipientId: conv.id,
    message: text,
    timestamp: String(Date.now()),
  };
  insertSorted(conv.messages, item);
  conv.error = null;
  scheduleRender();
  return deliver(conv, item);
}

async function deliver(conv, item) {
  const st = store.chat;
  const sender = store.session.userId;
  Object.assign(item, { pending: true, failed: false, failure: "", transientFailure: false });
  scheduleRender();

  const body = conv.kind === "group"
    ? { senderId: sender, groupId: conv.id, message: item.message }
    : { senderId: sender, receiverId: conv.id, message: item.message };
  let lastError = null;
  for (let attempt = 0; attempt < SEND_ATTEMPTS; attempt += 1) {
    try {
      // Files go up first (once each: a retry reuses what was uploaded), then the message.
      item.uploaded = item.uploaded || [];
      while (item.uploaded.length < item.files.length) {
        const media = await uploadMedia(item.files[item.uploaded.length], st.abort.signal);
        if (store.chat !== st) return;
        item.uploaded.push(media.mediaId);
      }
      if (item.uploaded.length) body.attachments = item.uploaded;
      const stored = await postMessage(conv.kind, body, item.idempotencyKey, st.abort.signal);
      if (store.chat !== st) return;
      const index = conv.messages.indexOf(item);
      if (index >= 0) conv.messages.splice(index, 1);
      if (!st.seen.has(stored.messageId)) {
        st.seen.add(stored.messageId);
        insertSorted(conv.messages, { ...stored, key: stored.messageId });
        conv.lastTs = Math.max(conv.lastTs, tsNumber(stored.timestamp));
      }
      conv.error = null;
      scheduleRender();
      return;
    } catch (err) {
      if (store.chat !== st || err?.name === "AbortError") return;
      lastError = err;
      if (err instanceof ApiError && err.status === 401) {
        sessionRejected(err);
        break;
      }
      if (!(err instanceof ApiError) || !err.transient || attempt === SEND_ATTEMPTS - 1) break;
      // Same Idempotency-Key on every retry: the server stores the message once.
      const waitMs = err.retryAfter != null ? err.retryAfter * 1000 : 500 * 2 ** attempt;
      await sleep(Math.min(waitMs, 10000));
      if (store.chat !== st) return;
    }
  }
  if (item.superseded) return; // the poll already showed it stored: nothing failed for the user
  item.pending = false;
  item.failed = true;
  item.transientFailure = !(lastError instanceof ApiError) || lastError.transient;
  item.failure = sendFailureText(conv, lastError);
  conv.error = item.failure;
  scheduleRender();
  if (st.selected === conv.key) $("composer-input").focus();
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

// ---------------------------------------------------------------- the composer

function autosize() {
  const input = $("composer-input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight + 2, 160)}px`;
}

function submit(event) {
  event.preventDefault();
  const input = $("composer-input");
  const conv = store.chat && selectedConversation();
  let text = input.value;
  const files = conv?.files || [];
  if (!conv || (!text.trim() && !files.length)) return;
  if (!text.trim()) text = files.map((f) => f.name).join(", "); // a message has text
  if ([...text].length > MAX_MESSAGE_CHARS) {
    conv.error = `A message can be at most ${MAX_MESSAGE_CHARS} characters.`;
    scheduleRender();
    return;
  }
  input.value = "";
  conv.files = [];
  autosize();
  sendMessage(conv, text, files);
  input.focus();
}

export function wireMessages() {
  const input = $("composer-input");
  input.addEventListener("input", autosize);
  input.addEventListener("input", typed);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", submit);
  // Scrolling back: the button, or reaching the top of the list, loads the page before.
  const loadOlder = () => {
    const conv = store.chat && selectedConversation();
    if (conv?.history?.hasOlder) loadHistory(conv, { older: true });
  };
  $("load-older").addEventListener("click", loadOlder);
  $("messages").addEventListener("scroll", () => {
    if ($("messages").scrollTop < 40) loadOlder();
  }, { passive: true });
  $("chat-error-close").addEventListener("click", () => {
    const conv = store.chat && selectedConversation();
    if (conv) conv.error = null;
    scheduleRender();
    input.focus();
  });
}
