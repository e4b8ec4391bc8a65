// The connection indicator and the page-wide banner.

import { errorText } from "./api.js";
import { $ } from "./dom.js";
import { store } from "./state.js";

export function setConnection(kind, detail = "") {
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

export function showBanner(text) {
  $("banner-text").textContent = text;
  $("banner").hidden = false;
}

// The server answered 401: stop every request of this session and say what to do.
export function sessionRejected(err) {
  const chat = store.chat;
  if (!chat) return;
  chat.abort.abort();
  clearInterval(chat.timer);
  setConnection("offline", "");
  $("connection").textContent = "Signed out by the server";
  showBanner(`The server no longer accepts this browser's token (${errorText(err)}). Sign out, then sign in with a valid user id and token or create a new account.`);
}
