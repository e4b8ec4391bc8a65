// Groups: creating one, the members panel of the open group (add, remove), leaving.

import { ApiError, changeMember, createGroup, errorText } from "../api.js";
import { $, announce, busy, el, shortId } from "../dom.js";
import { convTitle, displayName, nameNode, resolveUser } from "../names.js";
import { renderNow } from "../render.js";
import { ensureConversation, selectedConversation, store } from "../state.js";
import { dropGroup, loadGroup, restartPoll } from "../sync.js";
import { selectConversation } from "./conversations.js";

function renderMembers(conv) {
  const members = store.chat.groups.get(conv.id)?.members ?? [];
  const session = store.session;
  const rows = members.map((id) => {
    const self = id === session.userId;
    return el("li", { className: "person-row" },
      el("span", { className: "who" },
        self ? el("span", {}, `${session.username || "You"} (you)`) : nameNode(id),
        " ", el("small", {}, shortId(id))),
      self
        ? null
        : el("button", {
          type: "button",
          className: "btn btn-small",
          "aria-label": `Remove ${displayName(id)} from the group`,
          onclick: () => removeMember(conv.id, id),
        }, "Remove"));
  });
  $("member-list").replaceChildren(...rows);
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
