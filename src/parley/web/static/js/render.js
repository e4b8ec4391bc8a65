// When the page redraws: state changes call scheduleRender(); the views registered in app.js
// run once per microtask, in order.

import { $, NARROW_QUERY } from "./dom.js";
import { store } from "./state.js";

export function scheduleRender() {
  if (store.renderQueued) return;
  store.renderQueued = true;
  queueMicrotask(() => {
    store.renderQueued = false;
    if (store.chat) renderNow();
  });
}

export function renderNow() {
  for (const render of store.renderers) render();
}

// "list" or "chat": which half a narrow screen shows.
export function appView() {
  return $("app-view").dataset.view;
}

export function setAppView(view) {
  $("app-view").dataset.view = view;
  document.body.dataset.view = view;
}

// Is this conversation in front of the user right now?
export function onScreen(conv) {
  return store.chat.selected === conv.key && !document.hidden && (!NARROW_QUERY.matches || appView() === "chat");
}

export function updateTitle() {
  let unread = 0;
  for (const c of store.chat?.conversations.values() ?? []) unread += c.unread;
  document.title = unread ? `(${unread}) Parley` : "Parley";
}
