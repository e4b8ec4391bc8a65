// The README walkthrough, through a client generated from Parley's OpenAPI document.
//
//   npm ci && npm run generate && npm run build
//   npm run walkthrough -- http://127.0.0.1:8080     (a running Parley, token mode)
//
// Two users, a group, a private and a group message, polling with nextTimestamp, then a
// block and the send it refuses. Types come from generated/parley.d.ts (openapi-typescript)
// and every call goes through openapi-fetch; the script fails on any unexpected answer.
import createClient from "openapi-fetch";
import type { paths } from "./generated/parley.js";

declare const process: { argv: string[]; exitCode?: number };

const baseUrl = process.argv[2] ?? "http://127.0.0.1:8080";

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

function client(token?: string) {
  const headers: Record<string, string> = token ? { Authorization: `Bearer ${token}` } : {};
  return createClient<paths>({ baseUrl, headers });
}

async function signUp(username: string) {
  const { data, response } = await client().POST("/v1/users/create", { body: { username } });
  check(data?.token, `create ${username}: ${response.status}`);
  return { id: data.userId, api: client(data.token) };
}

async function main() {
  const alice = await signUp("alice");
  const bob = await signUp("bob");
  console.log(`users: alice=${alice.id} bob=${bob.id}`);

  const group = await alice.api.POST("/v1/groups/create", { body: { groupName: "team" } });
  check(group.data, `create group: ${group.response.status}`);
  const groupId = group.data.groupId;
  const added = await alice.api.POST("/v1/groups/{groupId}", {
    params: { path: { groupId }, query: { op: "add" } },
    body: { userId: bob.id },
  });
  check(added.data?.member === true, `add bob: ${added.response.status}`);
  console.log(`group: ${groupId} with bob`);

  const privateSend = await alice.api.POST("/v1/messages/send", {
    params: { query: { type: "private" } },
    body: { senderId: alice.id, receiverId: bob.id, message: "hi bob" },
  });
  check(privateSend.data, `private send: ${privateSend.response.status}`);
  const groupSend = await alice.api.POST("/v1/messages/send", {
    params: { query: { type: "group" } },
    body: { senderId: alice.id, groupId, message: "hello team" },
  });
  check(groupSend.data, `group send: ${groupSend.response.status}`);

  const first = await bob.api.GET("/v1/messages/{userId}", { params: { path: { userId: bob.id } } });
  check(first.data, `check: ${first.response.status}`);
  const texts = first.data.messages.map((m) => m.message);
  check(texts.join("|") === "hi bob|hello team", `bob reads ${JSON.stringify(texts)}`);
  const timestamp = first.data.nextTimestamp;
  console.log(`bob reads: ${JSON.stringify(texts)}, nextTimestamp=${timestamp}`);
  const again = await bob.api.GET("/v1/messages/{userId}", {
    params: { path: { userId: bob.id }, query: { timestamp } },
  });
  check(again.data?.messages.length === 0, "polling with nextTimestamp returns only newer ones");

  const blocked = await bob.api.POST("/v1/users/{userId}", {
    params: { path: { userId: bob.id }, query: { op: "block" } },
    body: { blockedUserId: alice.id },
  });
  check(blocked.data?.blocked === true, `block: ${blocked.response.status}`);
  const refused = await alice.api.POST("/v1/messages/send", {
    params: { query: { type: "private" } },
    body: { senderId: alice.id, receiverId: bob.id, message: "still there?" },
  });
  check(refused.response.status === 403, `refused send: ${refused.response.status}`);
  check(refused.error?.error.code === "blocked", `refused send: ${JSON.stringify(refused.error)}`);
  console.log(`bob blocked alice; her send is refused: ${refused.error.error.code}`);

  const last = await bob.api.GET("/v1/messages/{userId}", {
    params: { path: { userId: bob.id }, query: { timestamp } },
  });
  check(last.data?.messages.length === 0, "the refused message was not stored");
  console.log("walkthrough done");
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
