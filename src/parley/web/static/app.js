// Parley web chat: the entry module. Plain ES modules, no build step, same origin as the API;
// one vendored script (vendor/qrcode-generator, MIT) draws QR codes.
//
//   js/api.js       the API client: fetch wrapper, ApiError, one function per route
//   js/state.js     the one store (session, conversations, caches) and localStorage
//   js/render.js    scheduling redraws; js/status.js the connection line and banner
//   js/names.js     usernames by id; js/sync.js long-poll, groups and blocks from the server
//   js/session.js   signing in and out
//   js/views/       auth, conversations, messages, groups, blocks, devices: one per area

import { NARROW_QUERY } from "./js/dom.js";
import { renderNow, scheduleRender } from "./js/render.js";
import { showAuth, startApp, stopApp } from "./js/session.js";
import { loadSession, sessionKey, store } from "./js/state.js";
import { refreshGroups } from "./js/sync.js";
import { wireAuth } from "./js/views/auth.js";
import { wireBlocks, renderBlocks } from "./js/views/blocks.js";
import { signInFromLink, wireDevices } from "./js/views/devices.js";
import { renderConversationList, wireConversations } from "./js/views/conversations.js";
import { renderGroupPanel, wireGroups } from "./js/views/groups.js";
import { renderChat, wireMessages } from "./js/views/messages.js";
import { renderComposerFiles, wireAttachments } from "./js/views/attachments.js";

store.renderers.push(renderConversationList, renderChat, renderGroupPanel, renderBlocks, renderComposerFiles);
wireAuth();
wireConversations();
wireMessages();
wireAttachments();
wireGroups();
wireBlocks();
wireDevices();

document.addEventListener("visibilitychange", () => {
  if (!store.chat || document.hidden) return;
  scheduleRender();
  if (Date.now() - store.chat.lastGroupRefresh > 5000) refreshGroups();
});
NARROW_QUERY.addEventListener("change", () => { if (store.chat) renderNow(); });

// Another tab signed in or out: follow it.
window.addEventListener("storage", (event) => {
  if (event.key !== sessionKey) return;
  const saved = loadSession();
  const current = store.session;
  if (!saved) {
    if (store.chat) stopApp();
  } else if (!current || saved.userId !== current.userId || saved.token !== current.token) {
    startApp(saved);
  }
});

const saved = loadSession();
if (location.hash.startsWith("#link=")) {
  // A link from another device: sign in with the token it carries (replacing any session).
  if (!(await signInFromLink())) showAuth();
} else if (saved) startApp(saved);
else showAuth();
