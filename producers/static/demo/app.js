// The web demo's page: log in to a gate, list sessions with unread counts, chat.
// Everything it knows comes from the gate over the binary protocol (protocol.js); the API
// only serves the files and says where the gates are. Text from the network is put in the
// page with textContent, never as HTML.

import {
  Cmd,
  GateClient,
  MsgType,
  ResCode,
  SessionType,
  conversationOf,
  loadSchemas,
  uuid4,
} from "./protocol.js";

const HISTORY_PAGE = 20;
const NOTICE_VERBS = {
  1: "created the group",
  2: "invited",
  3: "removed",
  4: "left the group",
  5: "updated the group",
  6: "dismissed the group",
};

const $ = (id) => document.getElementById(id);
const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

const state = {
  codec: null,
  client: null,
  me: null, // user id (decimal string)
  nick: "",
  sessions: [], // ContactSessionInfo objects, as the server ordered them
  groupNames: new Map(), // group id -> name
  open: null, // {type, id}
  items: new Map(), // server_msg_id or client_msg_id -> <li> of the open conversation
  oldest: null, // smallest server_msg_id shown (BigInt)
  readSent: 0n, // the last read ack sent for the open conversation
  peerRead: 0n, // the peer's read seq of the open single chat
  refreshing: null, // the session-list refresh under way
  refreshAgain: false, // something changed since it was asked for
};

const keyOf = (type, id) => `${type}:${id}`;

function setStatus(text) {
  $("status").textContent = text;
}

// -- start ------------------------------------------------------------------------------

async function start() {
  const params = new URLSearchParams(location.search);
  $("user-id").value = params.get("user") || "";
  $("token").value = params.get("token") || "";
  const [codec, gate] = await Promise.all([loadSchemas(), suggestedGate(params.get("gate"))]);
  state.codec = codec;
  $("gate-url").value = gate;
  $("login-button").disabled = false;
  setStatus("not logged in");
}

async function suggestedGate(fromQuery) {
  if (fromQuery) return fromQuery;
  try {
    const response = await fetch("/demo/gate");
    const { ws_urls: urls } = await response.json();
    if (urls.length > 0) return urls[0];
  } catch (error) {
    console.warn("coffeebus: no gate list", error);
  }
  return `ws://${location.hostname}:8001`;
}

// -- login ------------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  const url = $("gate-url").value.trim();
  const userId = $("user-id").value.trim();
  $("login-button").disabled = true;
  setStatus(`connecting to ${url}…`);
  const client = new GateClient(state.codec);
  try {
    await client.connect(url);
    const rsp = await client.login(userId, $("token").value);
    state.client = client;
    state.me = userId;
    state.nick = rsp.user_info ? rsp.user_info.nick_name : "";
  } catch (error) {
    client.close();
    setStatus(`login failed: ${error.message}`);
    $("login-button").disabled = false;
    return;
  }
  client.addEventListener("push", (e) => onPush(e.detail));
  client.addEventListener("close", (e) => onClose(e.detail));
  document.body.dataset.user = state.me;
  setStatus(`${state.nick || "user"} (${state.me}) on ${url}`);
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  await refreshSessions();
}

function onClose({ reason }) {
  setStatus(`disconnected: ${reason}`);
  state.client = null;
  state.open = null;
  delete document.body.dataset.user;
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-button").disabled = false;
}

// -- pushes -----------------------------------------------------------------------------

function onPush({ commandId, message }) {
  switch (commandId) {
    case Cmd.MSG_DATA:
      return onMessage(message);
    case Cmd.MSG_READ_NOTIFY:
      return onReadNotify(message);
    case Cmd.GROUP_MEMBER_CHANGED_NOTIFY:
      return scheduleRefresh();
    case Cmd.KICK_NOTIFY:
      return setStatus(`kicked: ${message.text || message.reason}`);
    default:
      return undefined; // heartbeat answers and commands this page does not show
  }
}

function onMessage(msg) {
  const conv = conversationOf(msg, state.me);
  if (state.open && keyOf(state.open.type, state.open.id) === keyOf(conv.type, conv.id)) {
    showMessage(msg);
    markRead();
  }
  scheduleRefresh();
}

function onReadNotify(notify) {
  if (notify.user_id === state.me) {
    scheduleRefresh(); // read on another device of mine
    return;
  }
  const open = state.open;
  if (open && open.type === SessionType.SINGLE && open.id === notify.session_id) {
    const seq = BigInt(notify.msg_id);
    if (seq > state.peerRead) state.peerRead = seq;
    renderReadState();
  }
}

// -- sessions ---------------------------------------------------------------------------

// Pushes come in bursts: one session-list request answers all that arrived before it was
// sent, and one more is sent if any arrived while it was on its way.
function scheduleRefresh() {
  state.refreshAgain = true;
  if (state.refreshing) return;
  state.refreshing = (async () => {
    try {
      while (state.refreshAgain && state.client) {
        state.refreshAgain = false;
        await refreshSessions();
      }
    } catch (error) {
      console.warn("coffeebus: session list", error);
    } finally {
      state.refreshing = null;
    }
  })();
}

async function refreshSessions() {
  if (!state.client) return;
  const rsp = await state.client.request(Cmd.RECENT_SESSION_REQ, {
    user_id: state.me,
    latest_update_time: 0,
  });
  state.sessions = rsp.contact_session_list;
  await nameGroups(state.sessions.filter((s) => s.session_type === SessionType.GROUP));
  renderSessions(rsp.unread_counts);
}

async function nameGroups(sessions) {
  const unknown = sessions.map((s) => s.session_id).filter((id) => !state.groupNames.has(id));
  if (unknown.length === 0) return;
  const rsp = await state.client.request(Cmd.GROUP_INFO_REQ, {
    user_id: state.me,
    group_version_list: unknown.map((id) => ({ group_id: id, group_version: 0 })),
  });
  for (const info of rsp.group_info_list) state.groupNames.set(info.group_id, info.group_name);
}

function titleOf(type, id) {
  if (type === SessionType.GROUP) {
    const name = state.groupNames.get(id);
    return name ? `# ${name}` : `group ${id}`;
  }
  return `user ${id}`;
}

function renderSessions(totalUnread) {
  const list = $("sessions");
  list.replaceChildren();
  let total = 0;
  for (const s of state.sessions) {
    const open = state.open && keyOf(state.open.type, state.open.id) === keyOf(s.session_type, s.session_id);
    // The open conversation is read as it arrives; its read ack may still be on its way.
    const unread = open ? 0 : s.unread_cnt;
    total += unread;
    const li = document.createElement("li");
    li.dataset.session = keyOf(s.session_type, s.session_id);
    li.dataset.unread = String(unread);
    li.classList.toggle("open", Boolean(open));
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = titleOf(s.session_type, s.session_id);
    const badge = document.createElement("span");
    badge.className = "badge unread";
    badge.textContent = String(unread);
    badge.hidden = unread === 0;
    const preview = document.createElement("span");
    preview.className = "preview";
    preview.textContent = previewOf(s);
    li.append(name, badge, preview);
    li.addEventListener("click", () => openConversation(s.session_type, s.session_id));
    list.append(li);
  }
  const badge = $("total-unread");
  badge.textContent = String(total);
  badge.dataset.server = String(totalUnread);
  badge.hidden = total === 0;
}

function previewOf(session) {
  const who = session.msg_from_user_id === state.me ? "you" : session.msg_from_user_id;
  return `${who}: ${bodyText(session.msg_type, session.msg_data)}`;
}

function bodyText(msgType, data) {
  if (msgType === MsgType.TEXT) return textDecoder.decode(data);
  if (msgType === MsgType.NOTIFICATION) {
    try {
      const n = JSON.parse(textDecoder.decode(data));
      const verb = NOTICE_VERBS[n.notification_type] || "changed the group";
      const whom = [2, 3].includes(n.notification_type) ? ` ${n.member_id_list.join(", ")}` : "";
      return `${n.operator_user_id} ${verb}${whom} (${n.group_name})`;
    } catch {
      return "[group notification]";
    }
  }
  return `[message of type ${msgType}]`;
}

// -- a conversation ---------------------------------------------------------------------

async function openConversation(type, id) {
  state.open = { type, id };
  state.items = new Map();
  state.oldest = null;
  state.readSent = 0n;
  state.peerRead = 0n;
  $("messages").replaceChildren();
  $("chat-title").textContent = titleOf(type, id);
  $("chat").dataset.session = keyOf(type, id);
  $("compose").hidden = false;
  renderSessions(Number($("total-unread").dataset.server || 0));
  await loadHistory();
  markRead();
  $("text").focus();
}

async function loadHistory() {
  const open = state.open;
  const rsp = await state.client.request(Cmd.MSG_LIST_REQ, {
    user_id: state.me,
    session_type: open.type,
    session_id: open.id,
    end_msg_id: state.oldest === null ? "0" : state.oldest.toString(),
    limit_count: HISTORY_PAGE,
  });
  if (state.open !== open) return; // another conversation was opened meanwhile
  // Older pages go above what is shown; the server lists each page oldest first.
  const list = $("messages");
  const first = list.firstChild;
  for (const info of rsp.msg_list) {
    const li = messageItem({
      from_user_id: info.from_user_id,
      server_msg_id: info.server_msg_id,
      client_msg_id: info.client_msg_id,
      msg_type: info.msg_type,
      msg_data: info.msg_data,
    });
    if (li) list.insertBefore(li, first);
  }
  $("older").hidden = rsp.msg_list.length < HISTORY_PAGE;
  if (first === null) list.scrollTop = list.scrollHeight;
  renderReadState();
}

// An <li> for a message not shown yet (null if it is), registered by its ids.
function messageItem(msg) {
  const seq = BigInt(msg.server_msg_id);
  const sending = seq === 0n; // my own, not acked yet: known by its client_msg_id only
  if ((!sending && state.items.has(msg.server_msg_id)) || state.items.has(msg.client_msg_id)) {
    return null;
  }
  if (!sending && (state.oldest === null || seq < state.oldest)) state.oldest = seq;
  const li = document.createElement("li");
  const mine = msg.from_user_id === state.me;
  li.dataset.serverMsgId = msg.server_msg_id;
  li.dataset.clientMsgId = msg.client_msg_id;
  if (msg.msg_type === MsgType.NOTIFICATION) {
    li.className = "notice";
    li.textContent = bodyText(msg.msg_type, msg.msg_data);
  } else {
    li.className = mine ? "msg mine" : "msg theirs";
    const from = document.createElement("div");
    from.className = "from";
    from.textContent = mine ? "you" : `user ${msg.from_user_id}`;
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = bodyText(msg.msg_type, msg.msg_data);
    li.append(from, text);
    if (mine) {
      const st = document.createElement("div");
      st.className = "state";
      st.textContent = "sent";
      li.append(st);
    }
  }
  if (!sending) state.items.set(msg.server_msg_id, li);
  state.items.set(msg.client_msg_id, li);
  return li;
}

function showMessage(msg) {
  const li = messageItem(msg);
  if (!li) return;
  const list = $("messages");
  list.append(li);
  list.scrollTop = list.scrollHeight;
  renderReadState();
}

// Mark my messages the peer has read (single chats: MsgDataReadNotify).
function renderReadState() {
  for (const li of $("messages").querySelectorAll("li.mine")) {
    const st = li.querySelector(".state");
    const seq = BigInt(li.dataset.serverMsgId || "0");
    if (seq > 0n && seq <= state.peerRead) {
      st.textContent = "read";
      li.dataset.read = "true";
    }
  }
}

// Everything shown is read: one MsgDataReadAck for the newest message (it has no answer).
function markRead() {
  const open = state.open;
  let newest = 0n;
  for (const li of $("messages").children) {
    const seq = BigInt(li.dataset.serverMsgId || "0");
    if (seq > newest) newest = seq;
  }
  if (newest <= state.readSent) return;
  state.readSent = newest;
  state.client.send(Cmd.MSG_READ_ACK, {
    user_id: state.me,
    session_id: open.id,
    msg_id: newest.toString(),
    session_type: open.type,
  });
}

async function send(event) {
  event.preventDefault();
  const input = $("text");
  const text = input.value;
  if (!text || !state.open) return;
  input.value = "";
  const open = state.open;
  const msg = {
    from_user_id: state.me,
    from_nick_name: state.nick,
    to_session_id: open.id,
    client_msg_id: uuid4(),
    server_msg_id: "0",
    create_time: Math.floor(Date.now() / 1000),
    msg_type: MsgType.TEXT,
    session_type: open.type,
    msg_data: textEncoder.encode(text),
  };
  const li = messageItem(msg);
  li.querySelector(".state").textContent = "sending…";
  $("messages").append(li);
  try {
    const ack = await state.client.request(Cmd.MSG_DATA, msg);
    if (ack.res_code !== ResCode.OK) throw new Error(`refused (res_code ${ack.res_code})`);
    li.dataset.serverMsgId = ack.server_msg_id;
    state.items.set(ack.server_msg_id, li);
    li.querySelector(".state").textContent = "sent";
    renderReadState();
    // What I send is read by me: keep my own read seq at the conversation's head.
    if (state.open === open) markRead();
  } catch (error) {
    li.classList.add("failed");
    li.querySelector(".state").textContent = `not sent: ${error.message}`;
  }
  scheduleRefresh();
}

async function createGroup(event) {
  event.preventDefault();
  const members = $("group-members")
    .value.split(/[\s,]+/)
    .filter((id) => /^[0-9]+$/.test(id));
  const rsp = await state.client.request(Cmd.GROUP_CREATE_REQ, {
    user_id: state.me,
    group_name: $("group-name").value.trim(),
    member_id_list: members,
  });
  if (rsp.result_code !== 200) {
    setStatus(`group not created (result ${rsp.result_code})`);
    return;
  }
  const id = rsp.group_info.group_id;
  state.groupNames.set(id, rsp.group_info.group_name);
  $("group-name").value = "";
  $("group-members").value = "";
  await openConversation(SessionType.GROUP, id);
  await refreshSessions();
}

function openById(event) {
  event.preventDefault();
  openConversation(Number($("open-type").value), $("open-id").value.trim());
}

$("login").addEventListener("submit", login);
$("logout").addEventListener("click", () => state.client && state.client.close());
$("compose").addEventListener("submit", send);
$("group-form").addEventListener("submit", createGroup);
$("open-form").addEventListener("submit", openById);
$("older").addEventListener("click", () => loadHistory());
start().catch((error) => setStatus(`cannot start: ${error.message}`));
