// Signed out: create an account or sign in. Signed in: your id and token, and signing out.

import { ApiError, createUser, errorText, getMessages, getUser } from "../api.js";
import { $, announce, busy, copyText } from "../dom.js";
import { startApp, stopApp } from "../session.js";
import { saveSession, store, tokenNotice } from "../state.js";

async function signUp(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const username = $("signup-username").value.trim();
  $("signup-error").textContent = "";
  if (!username) {
    $("signup-error").textContent = "Choose a username.";
    $("signup-username").focus();
    return;
  }
  busy(form, true);
  try {
    const user = await createUser(username);
    if (!user.token) {
      throw new ApiError(500, "no_token", "The server did not return a token. Is it running in token mode?");
    }
    const session = { userId: user.userId, username: user.username, token: user.token };
    saveSession(session);
    tokenNotice.showFor(user.userId);
    form.reset();
    startApp(session);
    $("copy-id").focus();
  } catch (err) {
    $("signup-error").textContent = `Could not create the account: ${errorText(err)}`;
  } finally {
    busy(form, false);
  }
}

async function signIn(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const userId = $("signin-userid").value.trim();
  const token = $("signin-token").value.trim();
  $("signin-error").textContent = "";
  if (!userId || !token) {
    $("signin-error").textContent = "Paste both your user id and your token.";
    return;
  }
  busy(form, true);
  try {
    const user = await getUser(userId, { token });
    // Reading messages is allowed only to the user itself: this proves the token is this user's.
    await getMessages(userId, new URLSearchParams({ timestamp: String(Date.now()) }), { token });
    const session = { userId, username: user.username, token };
    saveSession(session);
    form.reset();
    startApp(session);
    $("copy-id").focus();
  } catch (err) {
    let text = errorText(err);
    if (err instanceof ApiError && err.status === 401) text = `The token was not accepted. ${text}`;
    else if (err instanceof ApiError && err.status === 403) text = `This token belongs to another user. ${text}`;
    else if (err instanceof ApiError && err.status === 404) text = `No user has this id. ${text}`;
    $("signin-error").textContent = `Could not sign in: ${text}`;
  } finally {
    busy(form, false);
  }
}

async function copyId() {
  const ok = await copyText(store.session.userId);
  $("copy-id").textContent = ok ? "Copied!" : "Select and copy";
  if (!ok) $("me-id").select();
  announce(ok ? "Your user id was copied." : "Copy failed: the id is selected, copy it with your keyboard.");
  setTimeout(() => { $("copy-id").textContent = "Copy id"; }, 2000);
}

function copyTokenWith(buttonId) {
  $(buttonId).addEventListener("click", async () => {
    const ok = await copyText(store.session.token);
    $(buttonId).textContent = ok ? "Copied!" : "Copy failed";
    announce(ok ? "Your token was copied. Keep it secret." : "Copy failed.");
    setTimeout(() => { $(buttonId).textContent = "Copy token"; }, 2000);
  });
}

function toggleToken() {
  const input = $("token-value");
  const show = input.type === "password";
  input.type = show ? "text" : "password";
  $("token-show").textContent = show ? "Hide" : "Show";
  $("token-show").setAttribute("aria-pressed", String(show));
}

export function wireAuth() {
  $("signup-form").addEventListener("submit", signUp);
  $("signin-form").addEventListener("submit", signIn);
  $("copy-id").addEventListener("click", copyId);
  $("me-id").addEventListener("focus", (event) => event.target.select());
  copyTokenWith("token-copy");
  copyTokenWith("account-token-copy");
  $("token-show").addEventListener("click", toggleToken);
  $("token-dismiss").addEventListener("click", () => {
    tokenNotice.dismiss();
    $("token-notice").hidden = true;
    $("copy-id").focus();
  });
  $("sign-out").addEventListener("click", () => {
    const dialog = $("signout-dialog");
    if (typeof dialog.showModal === "function") dialog.showModal();
    else stopApp();
  });
  $("signout-dialog").addEventListener("close", () => {
    if ($("signout-dialog").returnValue === "confirm") stopApp();
  });
  $("banner-close").addEventListener("click", () => { $("banner").hidden = true; });
}
