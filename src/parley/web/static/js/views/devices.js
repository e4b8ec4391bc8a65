// Signed-in devices: link another one (a one-time token and its QR code), list them, sign any
// of them out; set a password; sign in with a password; delete the account.
//
// A linked device's token travels as a link to this page, `/#link=<token>` (the token is
// `<userId>.<secret>`): opened on the other device (typed, or scanned from the QR code) the
// page signs in with it and removes it from the address bar. The QR code is drawn here, in a
// canvas, by the vendored qrcode-generator (vendor/qrcode-generator, MIT): nothing is loaded
// from elsewhere.

import {
  ApiError, deleteAccount, errorText, getDevices, getUser, linkDevice, revokeDevice,
  setPassword, signInWithPassword,
} from "../api.js";
import { $, announce, busy, el, formatTime } from "../dom.js";
import { startApp, stopApp } from "../session.js";
import { saveSession, store } from "../state.js";

const DEVICE_NAME = () => `${navigator.platform || "browser"} web page`.slice(0, 64);

export function linkUrl(token) {
  return `${location.origin}/#link=${encodeURIComponent(token)}`;
}

export function drawQr(canvas, text) {
  const make = globalThis.qrcode;
  if (typeof make !== "function") return false;
  const qr = make(0, "M");
  qr.addData(text);
  qr.make();
  const count = qr.getModuleCount();
  const scale = 4;
  const quiet = 4;
  const size = (count + 2 * quiet) * scale;
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, size, size);
  ctx.fillStyle = "#000";
  for (let row = 0; row < count; row++) {
    for (let col = 0; col < count; col++) {
      if (qr.isDark(row, col)) ctx.fillRect((col + quiet) * scale, (row + quiet) * scale, scale, scale);
    }
  }
  return true;
}

export async function renderDevices() {
  const session = store.session;
  if (!session) return;
  const list = $("device-list");
  $("devices-error").textContent = "";
  try {
    const { tokens } = await getDevices(session.userId);
    if (store.session !== session) return;
    list.replaceChildren(...tokens.map((device) => {
      const label = device.current ? `${device.deviceName} (this browser)` : device.deviceName;
      const button = el("button", { className: "btn btn-quiet", type: "button" }, "Sign it out");
      button.setAttribute("aria-label", `Sign ${label} out`);
      button.addEventListener("click", () => signOutDevice(device, button));
      return el("li", { className: "device", dataset: { tokenId: device.tokenId } },
        el("span", { className: "device-name" }, label),
        el("span", { className: "hint" }, ` last used ${formatTime(device.lastUsedAt)}`),
        button);
    }));
  } catch (err) {
    $("devices-error").textContent = `Could not list your devices: ${errorText(err)}`;
  }
}

async function signOutDevice(device, button) {
  button.disabled = true;
  try {
    await revokeDevice(store.session.userId, device.tokenId);
    if (device.current) {
      stopApp();
      return;
    }
    announce(`${device.deviceName} was signed out.`);
    await renderDevices();
  } catch (err) {
    $("devices-error").textContent = `Could not sign it out: ${errorText(err)}`;
    button.disabled = false;
  }
}

async function link() {
  const session = store.session;
  $("devices-error").textContent = "";
  $("link-device").disabled = true;
  try {
    const name = $("link-name").value.trim() || "linked device";
    const made = await linkDevice(session.userId, name);
    const url = linkUrl(made.token);
    $("link-url").value = url;
    $("link-panel").hidden = false;
    if (!drawQr($("link-qr"), url)) $("link-qr").hidden = true;
    announce("A link for your other device is ready. It works once per device; keep it secret.");
    await renderDevices();
  } catch (err) {
    $("devices-error").textContent = `Could not link a device: ${errorText(err)}`;
  } finally {
    $("link-device").disabled = false;
  }
}

async function changePassword(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const password = $("password-new").value;
  const current = $("password-current").value;
  $("password-status").textContent = "";
  if (password.length < 8) {
    $("password-status").textContent = "A password has at least 8 characters.";
    return;
  }
  busy(form, true);
  try {
    await setPassword(store.session.userId, password, current || undefined);
    form.reset();
    $("password-status").textContent = "Password set. You can sign in with it on any device.";
  } catch (err) {
    let text = errorText(err);
    if (err instanceof ApiError && err.status === 401) text = "The current password is wrong.";
    $("password-status").textContent = `Could not set the password: ${text}`;
  } finally {
    busy(form, false);
  }
}

async function passwordSignIn(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const userId = $("password-signin-userid").value.trim();
  const password = $("password-signin-password").value;
  $("password-signin-error").textContent = "";
  if (!userId || !password) {
    $("password-signin-error").textContent = "Enter your user id and your password.";
    return;
  }
  busy(form, true);
  try {
    const made = await signInWithPassword(userId, password, DEVICE_NAME());
    const user = await getUser(userId, { token: made.token });
    const session = { userId, username: user.username, token: made.token };
    saveSession(session);
    form.reset();
    startApp(session);
  } catch (err) {
    let text = errorText(err);
    if (err instanceof ApiError && err.status === 401) text = "Wrong user id or password.";
    if (err instanceof ApiError && err.status === 429) text = `Too many attempts. ${text}`;
    $("password-signin-error").textContent = `Could not sign in: ${text}`;
  } finally {
    busy(form, false);
  }
}

// `/#link=<token>`: a device linked from another one signs in with the token it carries.
export async function signInFromLink() {
  const match = /^#link=(.+)$/.exec(location.hash);
  if (!match) return false;
  history.replaceState(null, "", location.pathname + location.search);
  const token = decodeURIComponent(match[1]);
  const userId = token.slice(0, token.lastIndexOf("."));
  try {
    const user = await getUser(userId, { token });
    const session = { userId, username: user.username, token };
    saveSession(session);
    startApp(session);
    return true;
  } catch (err) {
    $("signin-error").textContent = `This link did not sign you in: ${errorText(err)}`;
    return false;
  }
}

function askDelete() {
  $("delete-error").textContent = "";
  $("delete-password").value = "";
  $("delete-dialog").showModal();
}

async function confirmDelete(event) {
  event.preventDefault();
  const session = store.session;
  try {
    await deleteAccount(session.userId, $("delete-password").value || undefined);
    $("delete-dialog").close();
    stopApp();
    announce("Your account was deleted.");
  } catch (err) {
    let text = errorText(err);
    if (err instanceof ApiError && err.status === 401) text = "The password is wrong.";
    $("delete-error").textContent = `Could not delete the account: ${text}`;
  }
}

export function wireDevices() {
  $("account-details").addEventListener("toggle", () => {
    if ($("account-details").open) renderDevices();
  });
  $("link-device").addEventListener("click", link);
  $("password-form").addEventListener("submit", changePassword);
  $("password-signin-form").addEventListener("submit", passwordSignIn);
  $("delete-account").addEventListener("click", askDelete);
  $("delete-confirm").addEventListener("click", confirmDelete);
  $("delete-cancel").addEventListener("click", () => $("delete-dialog").close());
}
