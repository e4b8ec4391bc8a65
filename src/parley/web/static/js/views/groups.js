// Groups: creating one, the members panel of the open group (add, remove, promote, demote,
// with each member's role), leaving.

import { ApiError, changeMember, createGroup, errorText } from "../api.js";
import { $, announce, busy, el, shortId } from "../dom.js";
import { convTitle, displayName, nameNode, resolveUser } from "../names.js";
import { renderNow } from "../render.js";
import { ensureConversation, selectedConversation, store } from "../state.js";
import { dropGroup, loadGroup, restartPoll } from "../sync.js";
import { selectConversation } from "./conversations.js";

function renderMembers(conv) {
  const group = store.chat.groups.get(conv.id);
  const members = group?.members ?? [];
  const roles = group?.roles ?? {};
  const session = store.session;
  const mine = roles[session.userId];
  const rows = members.map((id) => {
    const self = id === session.userId;
    const role = roles[id];
    // What the server allows (it decides; these only hide buttons that would be refused):
    // the owner removes anyone and promotes or demotes; an admin removes members.
    const mayRemove = !roles[session.userId] || mine === "owner" || (mine === "admin" && role === "member");
    const button = (label, text, onclick) =>
      el("button", { type: "button", className: "btn btn-small", "aria-label": label, onclick }, text);
    return el("li", { className: "person-row" },
      el("span", { className: "who" },
        self ? el("span", {}, `${session.username || "You"} (you)`) : nameNode(id),
        " ", el("small", {}, shortId(id)),
        role && role !== "member" ? el("small", { className: "role" }, ` ${role}`) : null),
      self || mine !== "owner" || role === "owner"
        ? null
        : role === "admin"
          ? button(`Make ${displayName(id)} a member`, "Demote", () => changeRole(conv.id, id, "demote"))
          : button(`Make ${displayName(id)} an admin`, "Promote", () => changeRole(conv.id, id, "promote")),
      self || !mayRemove
        ? null
        : button(`Remove ${displayName(id)} from the group`, "Remove", () => removeMember(conv.id, id)));
  });
  $("member-list").replaceChildren(...rows);
}

async function changeRole(groupId, userId, op) {
  const errorNode = $("members-error");
  errorNode.textContent = "";
  try {
    await changeMember(groupId, userId, op);
  } catch (err) {
    errorNode.textContent = `Could not change the role: ${errorText(err)}`;
    return;
  }
  announce(`${displayName(userId)} is now ${op === "promote" ? "an admin" : "a member"}.`);
  await loadGroup(groupId);
}

export function renderGroupPanel() {
  const conv = selectedConversation();
  const isGroup = conv?.kind === "group";
  const open = isGroup && store.chat.membersOpen;
  $("members-toggle").hidden = !isGroup;
  $("members-toggle").setAttribute("aria-expanded", String(open));
  $("leave-group").hidden = !isGroup;
  $("members-panel").hidden = !open;
  if (open) renderMembers(conv);
}

async function newGroup(name) {
  const errorNode = $("sidebar-error");
  errorNode.textContent = "";
  const groupName = name.trim();
  if (!groupName) {
    errorNode.textContent = "Give the group a name.";
    return false;
  }
  try {
    const group = await createGroup(groupName);
    const chat = store.chat;
    chat.groups.set(group.groupId, { ...group, members: [store.session.userId] });
    ensureConversation(`g:${group.groupId}`);
    await loadGroup(group.groupId);
    restartPoll();
    selectConversation(`g:${group.groupId}`);
    chat.membersOpen = true;
    renderNow();
    $("add-member-id").focus();
    announce(`Group ${groupName} created. Add members by pasting their user id.`);
    return true;
  } catch (err) {
    errorNode.textContent = `Could not create the group: ${errorText(err)}`;
    return false;
  }
}

async function addMember(groupId, userId) {
  const errorNode = $("members-error");
  errorNode.textContent = "";
  const id = userId.trim();
  if (!id) {
    errorNode.textContent = "Paste a user id first.";
    return false;
  }
  try {
    await changeMember(groupId, id, "add");
  } catch (err) {
    errorNode.textContent = err instanceof ApiError && err.status === 409
      ? `Already a member. ${errorText(err)}`
      : `Could not add the member: ${errorText(err)}`;
    return false;
  }
  await resolveUser(id);
  await loadGroup(groupId);
  announce(`${displayName(id)} added to the group.`);
  return true;
}

async function removeMember(groupId, userId) {
  const errorNode = $("members-error");
  errorNode.textContent = "";
  try {
    await changeMember(groupId, userId, "remove");
  } catch (err) {
    errorNode.textContent = `Could not remove the member: ${errorText(err)}`;
    return;
  }
  if (userId === store.session.userId) {
    const name = convTitle(store.chat.conversations.get(`g:${groupId}`) || { kind: "group", id: groupId });
    dropGroup(groupId);
    announce(`You left ${name}.`);
    $("conversation-list").querySelector("button")?.focus();
    return;
  }
  announce(`${displayName(userId)} removed from the group.`);
  await loadGroup(groupId);
  $("members-toggle").focus();
}

export function wireGroups() {
  $("new-group-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    busy(form, true);
    const ok = await newGroup($("new-group-name").value);
    busy(form, false);
    if (ok) {
      form.reset();
      $("add-member-id").focus();
    } else {
      $("new-group-name").focus();
    }
  });
  $("add-member-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const conv = selectedConversation();
    if (conv?.kind !== "group") return;
    busy(form, true);
    const ok = await addMember(conv.id, $("add-member-id").value);
    busy(form, false);
    if (ok) form.reset();
    $("add-member-id").focus();
  });
  $("members-toggle").addEventListener("click", () => {
    const chat = store.chat;
    chat.membersOpen = !chat.membersOpen;
    const conv = selectedConversation();
    if (chat.membersOpen && conv) loadGroup(conv.id);
    renderNow();
    if (chat.membersOpen) $("add-member-id").focus();
  });
  $("leave-group").addEventListener("click", () => {
    const conv = selectedConversation();
    if (conv?.kind === "group") removeMember(conv.id, store.session.userId);
  });
}
