// Signing in and out of the page: start the store and the sync for a session, or clear both.

import { getUser } from "./api.js";
import { $ } from "./dom.js";
import { rememberName } from "./names.js";
import { renderNow, setAppView, updateTitle } from "./render.js";
import { forgetSession, freshChat, saveSession, store, tokenNotice } from "./state.js";
import { startSync, stopSync } from "./sync.js";

export function startApp(session) {
  if (store.chat) stopSync(store.chat);
  store.session = session;
  store.chat = freshChat();
  store.names.clear();
  $("conversation-list").replaceChildren();
  if (session.username) rememberName(session.userId, session.username);

  $("auth-view").hidden = true;
  $("app-view").hidden = false;
  $("identity").hidden = false;
  $("sign-out").hidden = false;
  $("me-name").textContent = session.username || "(unknown name)";
  $("me-id").value = session.userId;
  $("token-value").value = session.token;
  $("account-token").value = session.token;
  $("token-notice").hidden = !tokenNotice.shownFor(session.userId);
  setAppView("list");
  renderNow();

  const st = store.chat;
  if (!session.username) {
    getUser(session.userId).then((user) => {
      if (store.chat !== st) return;
      session.username = user.username;
      saveSession(session);
      $("me-name").textContent = user.username;
      rememberName(session.userId, user.username);
    }).catch(() => {});
  }
  startSync(st);
}

export function stopApp() {
  if (store.chat) stopSync(store.chat);
  store.chat = null;
  store.session = null;
  forgetSession();
  $("app-view").hidden = true;
  $("identity").hidden = true;
  $("sign-out").hidden = true;
  $("connection").hidden = true;
  $("banner").hidden = true;
  $("token-value").value = "";
  $("account-token").value = "";
  $("conversation-list").replaceChildren();
  $("messages").replaceChildren();
  showAuth();
  updateTitle();
}

export function showAuth() {
  $("auth-view").hidden = false;
  document.body.dataset.view = "auth";
  $("signup-username").focus();
}
