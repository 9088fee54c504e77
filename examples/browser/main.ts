// A staff inbox on Omega's gRPC-Web API, as a browser uses it: a Connect-ES client generated
// from the repository's protos (build.sh), over the gRPC-Web transport, through Envoy.
// Lists a business's conversations, shows one's messages, adds an internal note, and follows
// the conversation's events live (EventService/StreamEvents, server streaming over gRPC-Web).
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ConversationService } from "./gen/omega/v1/conversations_pb";
import type { ConversationSummary } from "./gen/omega/v1/resources_pb";
import { EventService } from "./gen/omega/v1/events_pb";

const byId = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const input = (id: string) => byId<HTMLInputElement>(id);

interface Session {
  conversations: Client<typeof ConversationService>;
  events: Client<typeof EventService>;
  businessId: number;
  staffId: number;
}

let session: Session | undefined;
let selected: ConversationSummary | undefined;
// Ends the stream of the conversation shown before, when another is opened.
let stopFollowing = () => {};
// Only the latest refresh of the message list draws it.
let refreshes = 0;

function showError(err: unknown) {
  const e = ConnectError.from(err);
  byId("error").textContent = `${Code[e.code]}: ${e.rawMessage}`;
}

function connect(): Session {
  const key = input("api-key").value.trim();
  // The key travels in X-API-KEY, a header no other site's page can make the browser send.
  const withKey: Interceptor = (next) => (req) => {
    req.header.set("x-api-key", key);
    return next(req);
  };
  const transport = createGrpcWebTransport({
    baseUrl: input("envoy-url").value.trim().replace(/\/+$/, ""),
    interceptors: [withKey],
  });
  return {
    conversations: createClient(ConversationService, transport),
    events: createClient(EventService, transport),
    businessId: Number(input("business-id").value),
    staffId: Number(input("staff-id").value),
  };
}

async function loadInbox(event: SubmitEvent) {
  event.preventDefault();
  byId("error").textContent = "";
  stopFollowing();
  session = connect();
  byId("conversations").replaceChildren();
  byId("conversation").hidden = true;
  try {
    const page = await session.conversations.listConversations({ businessId: session.businessId, pageSize: 50 });
    byId("total").textContent = `(${page.totalSize})`;
    byId("conversations").replaceChildren(
      ...page.conversations.map((c) => {
        const button = document.createElement("button");
        button.type = "button";
        const preview = c.lastMessage?.preview ?? "";
        button.textContent = `${c.clientName} · ${c.status}${c.unreadCount ? ` · ${c.unreadCount} unread` : ""} — ${preview}`;
        button.addEventListener("click", () => openConversation(c));
        const li = document.createElement("li");
        li.dataset.conversationId = String(c.conversationId);
        li.append(button);
        return li;
      }),
    );
  } catch (err) {
    showError(err);
  }
}

async function openConversation(c: ConversationSummary) {
  stopFollowing();
  selected = c;
  byId("conversation").hidden = false;
  byId("conversation-title").textContent = `${c.clientName} (conversation ${c.conversationId})`;
  byId("events").replaceChildren();
  await refreshMessages();
  follow(c);
}

async function refreshMessages() {
  if (!session || !selected) return;
  const mine = ++refreshes;
  try {
    const page = await session.conversations.listConversationMessages({
      businessId: session.businessId,
      clientId: selected.clientId,
      conversationId: selected.conversationId,
      pageSize: 100,
    });
    if (mine !== refreshes) return;
    // Newest first on the wire; read top to bottom, oldest first.
    byId("messages").replaceChildren(
      ...page.messages.reverse().map((m) => {
        const li = document.createElement("li");
        li.dataset.messageId = m.id;
        li.className = m.channel;
        const when = m.createdAt ? timestampDate(m.createdAt).toLocaleString() : "";
        li.textContent = `${m.channel} ${m.direction.toLowerCase()} · ${when} — ${m.content}`;
        return li;
      }),
    );
  } catch (err) {
    showError(err);
  }
}

async function addNote(event: SubmitEvent) {
  event.preventDefault();
  if (!session || !selected) return;
  const content = byId<HTMLTextAreaElement>("note-content");
  try {
    await session.conversations.addNote({
      businessId: session.businessId,
      clientId: selected.clientId,
      conversationId: selected.conversationId,
      content: content.value,
      sentBy: session.staffId,
      senderType: "staff",
    });
    content.value = "";
    await refreshMessages();
  } catch (err) {
    showError(err);
  }
}

// The conversation's event log from its start, then live; reconnects after the last id
// received when the server goes away (a restart, a replica draining), as the API asks.
async function follow(c: ConversationSummary) {
  const abort = new AbortController();
  stopFollowing = () => abort.abort();
  const status = byId("live-status");
  let afterId = 0;
  while (!abort.signal.aborted && session) {
    status.textContent = "connecting";
    try {
      const stream = session.events.streamEvents(
        { businessId: session.businessId, conversationId: c.conversationId, afterId },
        { signal: abort.signal },
      );
      for await (const item of stream) {
        status.textContent = "following";
        if (item.item.case !== "event") continue;
        const e = item.item.value;
        afterId = e.id;
        const li = document.createElement("li");
        li.dataset.eventId = String(e.id);
        li.dataset.kind = e.kind;
        li.textContent = `#${e.id} ${e.kind} ${e.data}`;
        byId("events").prepend(li);
        if (e.kind.startsWith("message.") || e.kind === "note.added") void refreshMessages();
      }
    } catch (err) {
      if (abort.signal.aborted) return;
      const e = ConnectError.from(err);
      if (e.code !== Code.Unavailable) {
        status.textContent = "stopped";
        showError(e);
        return;
      }
    }
    status.textContent = "reconnecting";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

byId<HTMLFormElement>("connect").addEventListener("submit", loadInbox);
byId<HTMLFormElement>("note-form").addEventListener("submit", addNote);
