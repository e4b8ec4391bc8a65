// Small DOM and formatting helpers. No state lives here.
//
// Safety rule for every module of the page: user-provided text (usernames, group names,
// messages, ids, server error messages) only ever reaches the page through textContent, value
// or attributes, never through innerHTML.

export const NARROW_QUERY = window.matchMedia("(max-width: 720px)");

export const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") {
      for (const [k, v] of Object.entries(value)) if (v !== undefined && v !== null) node.dataset[k] = v;
    }
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function uuid() {
  if (typeof crypto.randomUUID === "function") {
    try { return crypto.randomUUID(); } catch { /* insecure context: fall through */ }
  }
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function shortId(id) {
  const s = String(id);
  return s.length > 14 ? `${s.slice(0, 10)}…` : s;
}

// Message timestamps are milliseconds since the epoch, sent as strings.
export function tsNumber(ts) {
  const n = Number(ts);
  return Number.isFinite(n) ? n : 0;
}

export function formatTime(ts) {
  const d = new Date(tsNumber(ts));
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return sameDay ? time : `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

export function initials(name) {
  const parts = String(name || "?").trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? [...parts[0]][0] + [...parts[1]][0] : [...(parts[0] || "?")][0];
  return letters.toUpperCase();
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Clipboard API unavailable (e.g. plain http on a LAN address): fall back to a selection copy.
    const area = el("textarea", { readonly: true, "aria-hidden": "true" });
    area.value = text;
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    area.remove();
    return ok;
  }
}

export function announce(text) {
  const node = $("announcer");
  node.textContent = "";
  // A fresh text node after a tick makes screen readers announce repeated texts too.
  setTimeout(() => { node.textContent = text; }, 50);
}

export function busy(form, on) {
  for (const control of form.querySelectorAll("button, input, textarea")) control.disabled = on;
}
