// Attachments: files on messages (pictures shown inline, other files as download links) and
// the files waiting in the composer (added by the picker or by dropping them on the chat).
// Files are fetched with the token (an <img src> could not send it) and shown from blob: URLs.

import { errorText, fetchMedia } from "../api.js";
import { $, el } from "../dom.js";
import { scheduleRender } from "../render.js";
import { selectedConversation, store } from "../state.js";

export const MAX_FILES = 10;
export const MAX_FILE_BYTES = 25 * 1024 * 1024;
const INLINE_IMAGE = /^image\/(png|jpeg|gif|webp|avif|bmp)$/;

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

// What the page knows of one file, fetched once per session: {type, size, url?}.
function describe(mediaId) {
  const known = store.chat.media;
  let found = known.get(mediaId);
  if (!found) {
    const signal = store.chat.abort.signal;
    found = (async () => {
      const head = await fetchMedia(mediaId, "HEAD", signal);
      const type = (head.headers.get("Content-Type") || "").split(";")[0].trim().toLowerCase();
      const size = Number(head.headers.get("Content-Length") || 0);
      if (!INLINE_IMAGE.test(type)) return { type, size, url: null };
      const bytes = await (await fetchMedia(mediaId, "GET", signal)).blob();
      return { type, size, url: URL.createObjectURL(bytes) };
    })();
    found.catch(() => known.delete(mediaId)); // try again on the next render
    known.set(mediaId, found);
  }
  return found;
}

async function download(mediaId, button) {
  button.disabled = true;
  try {
    const response = await fetchMedia(mediaId, "GET", store.chat.abort.signal);
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: mediaId, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    button.title = errorText(err);
  } finally {
    button.disabled = false;
  }
}

function fill(node, mediaId) {
  describe(mediaId).then(({ type, size, url }) => {
    if (url) {
      node.replaceChildren(el("img", { className: "msg-image", src: url, alt: `Picture (${formatSize(size)})` }));
      node.dataset.kind = "image";
    } else {
      const button = el("button", { type: "button", className: "btn btn-small msg-file-link" },
        `Download file (${type || "file"}, ${formatSize(size)})`);
      button.addEventListener("click", () => download(mediaId, button));
      node.replaceChildren(button);
      node.dataset.kind = "file";
    }
  }, (err) => {
    node.replaceChildren(el("span", { className: "msg-file-missing" }, `File unavailable: ${errorText(err)}`));
  });
}

// The files of a stored message.
export function attachmentsElement(mediaIds) {
  return el("div", { className: "msg-files" }, ...mediaIds.map((id) => {
    const node = el("div", { className: "msg-file", dataset: { mediaId: id } }, "Loading file…");
    fill(node, id);
    return node;
  }));
}

// The files of a message still being sent: their names.
export function pendingFilesElement(files) {
  return el("div", { className: "msg-files" },
    ...files.map((f) => el("div", { className: "msg-file" }, `${f.name} (${formatSize(f.size)})`)));
}

// ---------------------------------------------------------------- the composer's files

export function addFiles(conv, files) {
  const list = conv.files || (conv.files = []);
  for (const file of files) {
    if (list.length >= MAX_FILES) {
      conv.error = `A message can carry at most ${MAX_FILES} files.`;
      break;
    }
    if (file.size > MAX_FILE_BYTES) {
      conv.error = `${file.name} is larger than ${formatSize(MAX_FILE_BYTES)}.`;
      continue;
    }
    list.push(file);
  }
  scheduleRender();
}

export function renderComposerFiles() {
  const conv = store.chat && selectedConversation();
  const list = $("composer-files");
  const files = conv?.files || [];
  list.hidden = files.length === 0;
  list.replaceChildren(...files.map((file, i) => el("li", { className: "composer-file" },
    el("span", {}, `${file.name} (${formatSize(file.size)})`),
    el("button", {
      type: "button", className: "btn btn-quiet btn-small", "aria-label": `Remove ${file.name}`,
      onclick: () => { files.splice(i, 1); scheduleRender(); },
    }, "×"))));
}

export function wireAttachments() {
  const input = $("attach-input");
  $("attach").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    const conv = store.chat && selectedConversation();
    if (conv) addFiles(conv, [...input.files]);
    input.value = "";
  });
  const pane = $("chat-main");
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  pane.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    pane.classList.add("dropping");
  });
  pane.addEventListener("dragleave", (event) => {
    if (event.target === pane) pane.classList.remove("dropping");
  });
  pane.addEventListener("drop", (event) => {
    pane.classList.remove("dropping");
    if (!hasFiles(event)) return;
    event.preventDefault();
    const conv = store.chat && selectedConversation();
    if (conv) addFiles(conv, [...event.dataTransfer.files]);
  });
}
