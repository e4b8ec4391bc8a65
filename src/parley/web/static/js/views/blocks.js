// Blocking: the Block / Unblock button of a private conversation, its notice, and the list of
// blocked users under "Account and blocked users".

import { ApiError, errorText, setBlock } from "../api.js";
import { $, announce, el, shortId } from "../dom.js";
import { displayName, nameNode } from "../names.js";
import { scheduleRender } from "../render.js";
import { selectedConversation, store } from "../state.js";
import { refreshBlocked } from "../sync.js";

export function renderBlocks() {
  const chat = store.chat;
  const conv = selectedConversation();
  if (conv) {
    const isPrivate = conv.kind === "private";
    const blocked = isPrivate && chat.blocked.has(conv.id);
    const button = $("block-toggle");
    button.hidden = !isPrivate || conv.id === store.session.userId;
    button.textContent = blocked ? "Unblock" : "Block";
    button.setAttribute("aria-pressed", String(blocked));
    if (isPrivate) button.setAttribute("aria-label", `${blocked ? "Unblock" : "Block"} ${displayName(conv.id)}`);
    const notice = $("chat-notice");
    notice.hidden = !blocked;
    notice.textContent = blocked
      ? `You blocked ${displayName(conv.id)}. They can't send you private messages until you unblock them.`
      : "";
  }
  const ids = [...chat.blocked];
  $("no-blocked").hidden = ids.length > 0;
  $("blocked-list").replaceChildren(...ids.map((id) => el("li", { className: "person-row" },
    el("span", { className: "who" }, nameNode(id), " ", el("small", {}, shortId(id))),
    el("button", {
      type: "button",
      className: "btn btn-small",
      "aria-label": `Unblock ${displayName(id)}`,
      onclick: () => setBlocked(id, false),
    }, "Unblock"))));
}

async function setBlocked(userId, block) {
  const chat = store.chat;
  const conv = chat.conversations.get(`u:${userId}`);
  try {
    await setBlock(store.session.userId, userId, block);
  } catch (err) {
    // 409: already in the wanted state — just resync below.
    if (!(err instanceof ApiError && err.status === 409)) {
      const text = `Could not ${block ? "block" : "unblock"} ${displayName(userId)}: ${errorText(err)}`;
      if (conv && chat.selected === conv.key) conv.error = text;
      else $("sidebar-error").textContent = text;
      scheduleRender();
      return;
    }
  }
  if (block) chat.blocked.add(userId);
  else chat.blocked.delete(userId);
  announce(block ? `${displayName(userId)} is blocked.` : `${displayName(userId)} is unblocked.`);
  scheduleRender();
  refreshBlocked();
}

export function wireBlocks() {
  $("block-toggle").addEventListener("click", () => {
    const conv = selectedConversation();
    if (conv?.kind === "private") setBlocked(conv.id, !store.chat.blocked.has(conv.id));
  });
}
