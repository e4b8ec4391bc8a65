// The conversation list: one row per private conversation or group, newest first; opening a
// private conversation by user id; going back to the list on a narrow screen.

import { ApiError, errorText, getUser } from "../api.js";
import { $, NARROW_QUERY, announce, busy, el, formatTime, initials } from "../dom.js";
import { convTitle, displayName, rememberName } from "../names.js";
import { appView, renderNow, setAppView, updateTitle } from "../render.js";
import { ensureConversation, store } from "../state.js";
import { loadHistory, refreshBlocked, refreshGroups } from "../sync.js";

function sortedConversations() {
  return [...store.chat.conversations.values()].sort((a, b) => {
    if (b.lastTs !== a.lastTs) return b.lastTs - a.lastTs;
    return convTitle(a).localeCompare(convTitle(b));
  });
}

function preview(conv, last) {
  if (!last) return conv.kind === "group" ? "Group" : "Private conversation";
  if (last.failed) return `Not sent: ${last.message}`;
  if (last.pending) return `Sending: ${last.message}`;
  const mine = last.senderId === store.session.userId;
  const who = mine ? "You" : displayName(last.senderId);
  const text = last.deleted ? "(deleted)" : last.message;
  return conv.kind === "group" || mine ? `${who}: ${text}` : text;
}

// The server counts at most 1000 unread messages a conversation (unreadCapped: more).
const unreadText = (conv) => `${conv.unread}${conv.unreadCapped ? "+" : ""}`;

function rowChildren(conv, title, text, blocked, time) {
  return [
    el("span", { className: conv.kind === "group" ? "avatar group" : "avatar", "aria-hidden": "true" },
      conv.kind === "group" ? "#" : initials(title)),
    el("span", { className: "conv-name" }, title, blocked ? " (blocked)" : ""),
    el("span", { className: "conv-preview" }, text),
    el("span", { className: "conv-side" },
      time ? el("span", { className: "conv-time" }, time) : null,
      conv.unread ? el("span", { className: "badge", "aria-hidden": "true" }, unreadText(conv)) : null),
  ];
}

export function renderConversationList() {
  const chat = store.chat;
  const list = $("conversation-list");
  const convs = sortedConversations();
  $("no-conversations").hidden = convs.length > 0;
  const keep = new Set();
  let previous = null;
  for (const conv of convs) {
    const title = convTitle(conv);
    const last = conv.messages.at(-1) ?? null;
    const text = preview(conv, last);
    const blocked = conv.kind === "private" && chat.blocked.has(conv.id);
    const selected = chat.selected === conv.key;
    const time = last && !last.pending ? formatTime(last.timestamp) : "";
    const signature = JSON.stringify([title, text, blocked, selected, time, unreadText(conv)]);
    keep.add(conv.key);

    let row = chat.rows.get(conv.key);
    if (!row || row.signature !== signature) {
      const label = [
        conv.kind === "group" ? `Group ${title}` : title,
        blocked ? "blocked" : "",
        conv.unread ? `${unreadText(conv)} unread` : "",
      ].filter(Boolean).join(", ");
      const children = rowChildren(conv, title, text, blocked, time);
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
        chat.rows.set(conv.key, row);
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
  for (const [key, row] of chat.rows) {
    if (!keep.has(key)) {
      row.li.remove();
      chat.rows.delete(key);
    }
  }
}

export function selectConversation(key, { focus = false } = {}) {
  const chat = store.chat;
  if (!chat.conversations.has(key)) return;
  if (chat.selected !== key) chat.membersOpen = false;
  chat.selected = key;
  setAppView("chat");
  const conv = chat.conversations.get(key);
  conv.unread = 0;
  conv.unreadCapped = false;
  loadHistory(conv);
  updateTitle();
  renderNow();
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
    const user = await getUser(id);
    rememberName(id, user.username);
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

function back() {
  const key = store.chat.selected;
  setAppView("list");
  renderNow();
  if (key) $("conversation-list").querySelector(`[data-conv="${CSS.escape(key)}"]`)?.focus();
}

export function wireConversations() {
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
  $("back").addEventListener("click", back);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && store.chat && appView() === "chat" && NARROW_QUERY.matches
      && !$("signout-dialog").open) {
      back();
    }
  });
}
