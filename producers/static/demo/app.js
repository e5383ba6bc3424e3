// The web demo's page: a small chat app over the CoffeeChat binary protocol (protocol.js).
// Everything it knows comes from the gate, except people's names in groups (the API's
// GET /demo/users, which the protocol lacks) and where the gates are (GET /demo/gate).
// Text from the network goes into the page with textContent, never as HTML.

import {
  Cmd,
  ConnectError,
  ErrorCode,
  ExtResultCode,
  GateClient,
  InviteRspCode,
  KickReason,
  MsgStatus,
  MsgType,
  RequestError,
  ResCode,
  SessionType,
  TypingState,
  VoipByeReason,
  VoipInviteType,
  conversationOf,
  loadSchemas,
  uuid4,
} from "./protocol.js";

const HISTORY_PAGE = 20;
const REVOKE_WINDOW_S = 120; // the server's default ([messaging] revoke_window_s)
const TYPING_EVERY_MS = 3000; // a typing notify at most this often while typing
const TYPING_SHOWN_MS = 6000; // "… is typing" disappears without a new notify
const GROUP_READ_POLL_MS = 2000; // a group's read state is asked for, not pushed
const NOTICE_VERBS = {
  1: "created the group",
  2: "added",
  3: "removed",
  4: "left the group",
  5: "updated the group",
  6: "disbanded the group",
};

const $ = (id) => document.getElementById(id);
const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

const state = {
  codec: null,
  client: null,
  url: "",
  me: null, // user id (decimal string)
  token: "",
  names: new Map(), // user id -> nick name
  groupNames: new Map(), // group id -> name
  asked: new Set(), // user ids whose names were asked for
  sessions: [], // ContactSessionInfo objects, as the server ordered them
  open: null, // {type, id}
  items: new Map(), // server_msg_id or client_msg_id -> <li> of the open conversation
  oldest: null, // smallest server_msg_id shown (BigInt)
  readSent: 0n, // the last read ack sent for the open conversation
  peerRead: 0n, // the peer's read seq of the open single chat
  peerDelivered: 0n, // how far the peer's devices have the open single chat (DeliveredNotify)
  inboxSeq: 0n, // the user-inbox seq up to which the page has everything (for sync)
  refreshing: null, // the session-list refresh under way
  refreshAgain: false, // something changed since it was asked for
  typingSent: 0, // when the last "typing" notify went out (ms)
  typing: new Map(), // user id -> timer hiding their "is typing"
  readPoll: null, // the group read-state poll
  reconnecting: false,
  leaving: false, // the user logged out: no reconnect
  call: null, // {channel, peer, phase: "calling" | "incoming" | "talking"}
  callBeat: null, // the VoipHeartbeat interval while a call lasts
};

const CALL_HEARTBEAT_MS = 5000; // the server ends a call whose party is silent for 30 s

const keyOf = (type, id) => `${type}:${id}`;
const isOpen = (type, id) => state.open && keyOf(state.open.type, state.open.id) === keyOf(type, id);

function setStatus(text) {
  $("status").textContent = text;
}

// -- names and avatars ------------------------------------------------------------------

function nameOf(userId) {
  if (userId === state.me) return "You";
  return state.names.get(userId) || `user ${userId}`;
}

function initialsOf(name) {
  const words = name.replace(/^#\s*/, "").split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? words[0][0] + words[1][0] : (words[0] || "?")[0];
  return letters.toUpperCase();
}

function hueOf(id) {
  let hash = 0;
  for (const c of String(id)) hash = (hash * 31 + c.charCodeAt(0)) % 360;
  return hash;
}

// An avatar: initials on a colour of the person's (or group's) own.
function avatar(kind, id, name) {
  const el = document.createElement("span");
  el.className = "avatar";
  el.dataset.avatarOf = `${kind}:${id}`;
  el.style.setProperty("--hue", String(hueOf(`${kind}${id}`)));
  el.textContent = kind === "g" ? "#" : initialsOf(name);
  el.setAttribute("aria-hidden", "true");
  return el;
}

// A person's name in the page, updated in place once it is known.
function nameSpan(userId, className = "name") {
  const el = document.createElement("span");
  el.className = className;
  el.dataset.nameOf = userId;
  el.textContent = nameOf(userId);
  return el;
}

function learnNames(pairs) {
  let changed = false;
  for (const [id, nick] of pairs) {
    if (nick && state.names.get(id) !== nick) {
      state.names.set(id, nick);
      changed = true;
    }
  }
  if (!changed) return;
  for (const el of document.querySelectorAll("[data-name-of]")) el.textContent = nameOf(el.dataset.nameOf);
  for (const li of document.querySelectorAll("#messages li.notice")) {
    if (li.notification) li.textContent = bodyText(MsgType.NOTIFICATION, li.notification);
  }
  for (const el of document.querySelectorAll('[data-avatar-of^="u:"]')) {
    el.textContent = initialsOf(nameOf(el.dataset.avatarOf.slice(2)));
  }
  if (state.open) $("chat-title").textContent = titleOf(state.open.type, state.open.id);
  renderSessions();
}

// The user list (0x0601): everyone the user has a single chat with.
async function askPeers() {
  const rsp = await state.client.request(Cmd.FRIEND_QUERY_USER_LIST_REQ, { user_id: state.me });
  learnNames(rsp.user_info_list.map((u) => [u.user_id, u.nick_name]));
}

// Names the protocol does not tell (a group's members): the API's /demo/users.
async function askNames(ids) {
  const wanted = [...new Set(ids)].filter((id) => id && id !== state.me && !state.names.has(id) && !state.asked.has(id));
  if (wanted.length === 0) return;
  for (const id of wanted) state.asked.add(id);
  try {
    const query = wanted.map((id) => `id=${encodeURIComponent(id)}`).join("&");
    const response = await fetch(`/demo/users?${query}`, {
      headers: { "X-CoffeeBus-User-Id": state.me, "X-CoffeeBus-Token": state.token },
    });
    if (!response.ok) return;
    const { users } = await response.json();
    learnNames(users.map((u) => [u.user_id, u.nick_name]));
  } catch (error) {
    console.warn("coffeebus: names", error);
  }
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

// What went wrong, in words a person can act on (the codes stay in the console).
function loginProblem(error, url) {
  console.warn("coffeebus: login", error);
  if (error instanceof ConnectError) {
    return `Cannot reach the gate at ${url}. Is CoffeeBus running (make run)? Check the address.`;
  }
  if (error instanceof RequestError) {
    switch (error.code) {
      case ErrorCode.LOGIN_INVALID_USER_TOKEN:
      case ErrorCode.LOGIN_DB_VALIDATE_FAILED:
      case ErrorCode.LOGIN_INVALID_USER_OR_PWD:
        return "That user id and token do not match. make run prints the demo users' tokens (alice: 1001 / alice-demo-token).";
      case ErrorCode.LOGIN_VERSION_TOO_OLD:
        return "The server does not accept this page's version any more: reload the page.";
      case ExtResultCode.RATE_LIMITED:
        return "Too many attempts: wait a moment, then try again.";
      case ExtResultCode.UNAVAILABLE:
      case ExtResultCode.INTERNAL_ERROR:
        return "The server is busy or restarting: try again in a moment.";
      case undefined:
        return "The gate did not answer in time: try again.";
      default:
        return `The gate refused the login (code ${error.code}).`;
    }
  }
  return "The login did not work: try again.";
}

async function connectAndLogin(url, userId, token) {
  const client = new GateClient(state.codec);
  try {
    await client.connect(url);
    const rsp = await client.login(userId, token);
    return { client, rsp };
  } catch (error) {
    client.close();
    throw error;
  }
}

async function login(event) {
  event.preventDefault();
  const url = $("gate-url").value.trim();
  const userId = $("user-id").value.trim();
  const token = $("token").value;
  $("login-button").disabled = true;
  $("login-error").hidden = true;
  setStatus(`connecting to ${url}…`);
  let session;
  try {
    session = await connectAndLogin(url, userId, token);
  } catch (error) {
    $("login-error").textContent = loginProblem(error, url);
    $("login-error").hidden = false;
    setStatus("not logged in");
    $("login-button").disabled = false;
    return;
  }
  Object.assign(state, { url, me: userId, token, leaving: false });
  const nick = session.rsp.user_info ? session.rsp.user_info.nick_name : "";
  if (nick) state.names.set(userId, nick);
  document.body.dataset.user = state.me;
  // Me, by my own name (elsewhere I am "You"): not updated with the others' names.
  const myName = document.createElement("span");
  myName.className = "my-name";
  myName.textContent = nick || `user ${userId}`;
  const myAvatar = avatar("u", userId, nick || userId);
  delete myAvatar.dataset.avatarOf;
  $("me").replaceChildren(myAvatar, myName);
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  await attach(session.client);
}

// A logged-in connection: listen to it, learn names, catch up.
async function attach(client) {
  state.client = client;
  client.addEventListener("push", (e) => onPush(e.detail));
  client.addEventListener("close", (e) => onClose(client, e.detail));
  setStatus(`connected to ${state.url}`);
  document.body.dataset.connection = "up";
  await askPeers().catch((error) => console.warn("coffeebus: user list", error));
  await catchUp();
}

function onClose(client, { reason }) {
  if (client !== state.client) return;
  state.client = null;
  stopReadPoll();
  if (state.leaving) {
    if ($("login").hidden) showLogin("logged out"); // a kick has said why already
    return;
  }
  reconnect(reason);
}

function showLogin(message, problem = "") {
  setStatus(message);
  state.open = null;
  delete document.body.dataset.user;
  delete document.body.dataset.connection;
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-button").disabled = false;
  $("login-error").textContent = problem;
  $("login-error").hidden = !problem;
}

// The connection dropped (a server restart, a network change): try again, with growing
// pauses, and catch up on what was missed once logged in again.
async function reconnect(reason) {
  if (state.reconnecting) return;
  state.reconnecting = true;
  document.body.dataset.connection = "reconnecting";
  $("offline").hidden = false;
  let pause = 500;
  for (let attempt = 1; !state.leaving; attempt++) {
    setStatus(`connection lost (${reason}): reconnecting, attempt ${attempt}…`);
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 5000);
    try {
      const session = await connectAndLogin(state.url, state.me, state.token);
      state.reconnecting = false;
      $("offline").hidden = true;
      await attach(session.client);
      setStatus(`reconnected to ${state.url}`);
      return;
    } catch (error) {
      if (error instanceof RequestError && error.code >= 2000) {
        state.reconnecting = false;
        $("offline").hidden = true;
        return showLogin("not logged in", loginProblem(error, state.url));
      }
    }
  }
  state.reconnecting = false;
}

// Everything of the user's inbox after what the page has (Sync 0x0803): messages of the
// open conversation are shown, the rest shows in the session list.
async function catchUp() {
  let after = state.inboxSeq;
  let restarted = false;
  for (;;) {
    const rsp = await state.client.request(Cmd.SYNC_REQ, { user_id: state.me, after_seq: after.toString(), limit: 500 });
    const latest = BigInt(rsp.latest_seq);
    if (latest < after) {
      // The server lost its state (an embedded one restarted): start from its beginning.
      after = 0n;
      restarted = true;
      continue;
    }
    for (const entry of rsp.entries) {
      const msg = entry.msg;
      const conv = conversationOf(msg, state.me);
      if (!restarted && isOpen(conv.type, conv.id)) showMessage(msg);
      after = BigInt(entry.seq) > after ? BigInt(entry.seq) : after;
    }
    if (!rsp.has_more) {
      if (latest > after) after = latest;
      break;
    }
  }
  state.inboxSeq = after;
  if (restarted && state.open) {
    await openConversation(state.open.type, state.open.id);
  } else if (state.open) {
    markRead();
    startReadPoll();
  }
  await refreshSessions();
}

// -- pushes -----------------------------------------------------------------------------

function onPush({ commandId, message }) {
  switch (commandId) {
    case Cmd.MSG_DATA:
      return onMessage(message);
    case Cmd.MSG_READ_NOTIFY:
      return onReadNotify(message);
    case Cmd.DELIVERED_NOTIFY:
      return onDeliveredNotify(message);
    case Cmd.REVOKE_NOTIFY:
      return onRevokeNotify(message);
    case Cmd.TYPING_NOTIFY:
      return onTyping(message);
    case Cmd.GROUP_MEMBER_CHANGED_NOTIFY:
      return scheduleRefresh();
    case Cmd.VOIP_INVITE_REQ:
      return onCallInvite(message);
    case Cmd.VOIP_INVITE_REPLY:
      return onCallReply(message);
    case Cmd.VOIP_BYE_NOTIFY:
      return onCallBye(message);
    case Cmd.ERROR_RSP:
      if (message.request_command_id === Cmd.VOIP_INVITE_REQ && state.call) {
        return showCall(`${nameOf(state.call.peer)} is offline — they will see a missed call`);
      }
      return undefined;
    case Cmd.KICK_NOTIFY:
      if (message.reason === KickReason.SERVER_SHUTDOWN) return setStatus("the server is restarting…");
      state.leaving = true;
      return showLogin("logged out", `Logged out by the server: ${message.text || "signed in elsewhere"}.`);
    default:
      return undefined; // heartbeat answers and commands this page does not show
  }
}

function onMessage(msg) {
  if (msg.from_nick_name && msg.from_user_id !== state.me) learnNames([[msg.from_user_id, msg.from_nick_name]]);
  const conv = conversationOf(msg, state.me);
  if (isOpen(conv.type, conv.id)) {
    if (conv.type === SessionType.GROUP) askNames([msg.from_user_id, ...notificationPeople(msg)]);
    hideTyping(msg.from_user_id);
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

// The peer's device has my messages up to msg_id (0x0820): "delivered" under them.
function onDeliveredNotify(notify) {
  const open = state.open;
  if (open && open.type === SessionType.SINGLE && open.id === notify.session_id) {
    const seq = BigInt(notify.msg_id);
    if (seq > state.peerDelivered) state.peerDelivered = seq;
    renderReadState();
  }
}

function onRevokeNotify(notify) {
  if (isOpen(notify.session_type, notify.session_id)) {
    const li = state.items.get(notify.server_msg_id);
    if (li) markRevoked(li, notify.operator_user_id);
  }
  scheduleRefresh();
}

function onTyping(notify) {
  const group = notify.session_type === SessionType.GROUP;
  const conv = group ? notify.to_session_id : notify.from_user_id;
  if (!isOpen(notify.session_type, conv) || notify.from_user_id === state.me) return;
  if (notify.state === TypingState.STOPPED) return hideTyping(notify.from_user_id);
  clearTimeout(state.typing.get(notify.from_user_id));
  state.typing.set(notify.from_user_id, setTimeout(() => hideTyping(notify.from_user_id), TYPING_SHOWN_MS));
  if (group) askNames([notify.from_user_id]);
  renderTyping();
}

function hideTyping(userId) {
  if (!state.typing.has(userId)) return;
  clearTimeout(state.typing.get(userId));
  state.typing.delete(userId);
  renderTyping();
}

function renderTyping() {
  const who = [...state.typing.keys()].map(nameOf);
  const el = $("typing");
  el.textContent = who.length === 0 ? "" : `${who.join(", ")} ${who.length === 1 ? "is" : "are"} typing…`;
  el.hidden = who.length === 0;
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
  const rsp = await state.client.request(Cmd.RECENT_SESSION_REQ, { user_id: state.me, latest_update_time: 0 });
  state.sessions = rsp.contact_session_list;
  await nameGroups(state.sessions.filter((s) => s.session_type === SessionType.GROUP));
  const singles = state.sessions.filter((s) => s.session_type === SessionType.SINGLE);
  if (singles.some((s) => !state.names.has(s.session_id))) await askPeers().catch(() => undefined);
  askNames(state.sessions.map((s) => s.msg_from_user_id));
  renderSessions();
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
  return nameOf(id);
}

function renderSessions() {
  const list = $("sessions");
  list.replaceChildren();
  let total = 0;
  for (const s of state.sessions) {
    const open = isOpen(s.session_type, s.session_id);
    // The open conversation is read as it arrives; its read ack may still be on its way.
    const unread = open ? 0 : s.unread_cnt;
    total += unread;
    const group = s.session_type === SessionType.GROUP;
    const li = document.createElement("li");
    li.dataset.session = keyOf(s.session_type, s.session_id);
    li.dataset.unread = String(unread);
    li.classList.toggle("open", Boolean(open));
    li.classList.toggle("has-unread", unread > 0);
    const name = group ? document.createElement("span") : nameSpan(s.session_id);
    name.className = "name";
    if (group) name.textContent = titleOf(s.session_type, s.session_id);
    const time = document.createElement("time");
    time.className = "when";
    time.textContent = s.msg_time_stamp ? shortTime(s.msg_time_stamp) : "";
    const badge = document.createElement("span");
    badge.className = "badge unread";
    badge.textContent = String(unread);
    badge.hidden = unread === 0;
    badge.setAttribute("aria-label", `${unread} unread`);
    const preview = document.createElement("span");
    preview.className = "preview";
    preview.textContent = previewOf(s);
    li.append(avatar(group ? "g" : "u", s.session_id, titleOf(s.session_type, s.session_id)), name, time, preview, badge);
    li.addEventListener("click", () => openConversation(s.session_type, s.session_id));
    list.append(li);
  }
  const badge = $("total-unread");
  badge.textContent = String(total);
  badge.hidden = total === 0;
  document.title = total > 0 ? `(${total}) CoffeeBus web demo` : "CoffeeBus web demo";
}

function previewOf(session) {
  if (session.msg_status === MsgStatus.SEND_CANCEL) return "a message was revoked";
  const text = bodyText(session.msg_type, session.msg_data);
  if (session.msg_type === MsgType.NOTIFICATION) return text;
  return `${nameOf(session.msg_from_user_id)}: ${text}`;
}

function bodyText(msgType, data) {
  if (msgType === MsgType.TEXT || msgType === MsgType.TIPS) return textDecoder.decode(data);
  if (msgType === MsgType.NOTIFICATION) {
    try {
      const n = JSON.parse(textDecoder.decode(data));
      const verb = NOTICE_VERBS[n.notification_type] || "changed the group";
      const operator = String(n.operator_user_id);
      const others = (n.member_id_list || []).map(String).filter((id) => id !== operator);
      // "you" first, then the others by name: a stable sentence whatever the store's order
      others.sort((x, y) => (x === state.me ? -1 : y === state.me ? 1 : nameOf(x).localeCompare(nameOf(y))));
      const names = others.map((id) => (id === state.me ? "you" : nameOf(id)));
      const list = names.length > 1 ? `${names.slice(0, -1).join(", ")} and ${names.at(-1)}` : names.join("");
      const whom = [1, 2, 3].includes(n.notification_type) && list ? ` ${list}` : "";
      const what = n.notification_type === 1 ? ` “${n.group_name}”` : "";
      const with_ = whom && n.notification_type === 1 ? " with" : "";
      return `${nameOf(operator)} ${verb}${what}${with_}${whom}`;
    } catch {
      return "group notification";
    }
  }
  if (msgType === MsgType.AVCHAT) return callRecordText(data);
  return `[message of type ${msgType}]`;
}

// -- calls (signalling only: no media; docs/web-demo.md) -----------------------------------

function callKind(type) {
  return type === VoipInviteType.VIDEO_CALL ? "video call" : "voice call";
}

/** The AVCHAT message a finished call leaves in the conversation, as one line. */
function callRecordText(data) {
  try {
    const c = JSON.parse(textDecoder.decode(data));
    if (c.timeLen > 0 || c.hangupReason === VoipByeReason.END) {
      const s = c.timeLen || 0;
      return `☎ ${callKind(c.callType)} ${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    }
    const outcome = { [VoipByeReason.REJECT]: "declined", [VoipByeReason.BUSY]: "busy" }[c.hangupReason] || "missed";
    return `☎ ${outcome} ${callKind(c.callType)}`;
  } catch {
    return "☎ a call";
  }
}

/** The call bar: what the call is doing, and the buttons that make sense now. */
function showCall(text) {
  const call = state.call;
  $("call-bar").hidden = false;
  $("call-bar").dataset.phase = call ? call.phase : "over";
  $("call-text").textContent = text;
  $("call-answer").hidden = !call || call.phase !== "incoming";
  $("call-hangup").hidden = !call;
  $("call").disabled = Boolean(call);
}

function beginCall(call) {
  state.call = call;
  clearInterval(state.callBeat);
  const beat = () => state.client && state.client.send(Cmd.VOIP_HEARTBEAT, {});
  state.callBeat = setInterval(beat, CALL_HEARTBEAT_MS);
}

function endCall(text) {
  state.call = null;
  clearInterval(state.callBeat);
  state.callBeat = null;
  showCall(text);
}

async function startCall() {
  if (!state.open || state.open.type !== SessionType.SINGLE || state.call) return;
  const peer = state.open.id;
  try {
    const trying = await state.client.request(Cmd.VOIP_INVITE_REQ, {
      creator_user_id: state.me,
      invite_user_list: [peer],
      invite_type: VoipInviteType.VOICE_CALL,
    });
    beginCall({ channel: trying.channel_info.channel_name, peer, phase: "calling" });
    showCall(`Calling ${nameOf(peer)}…`);
  } catch (error) {
    showCall(`Cannot call: ${error.message}`);
  }
}

function onCallInvite(invite) {
  const channel = invite.channel_info.channel_name;
  if (state.call) return; // one call at a time: the server already answers busy
  beginCall({ channel, peer: invite.creator_user_id, phase: "incoming" });
  showCall(`${nameOf(invite.creator_user_id)} is calling (${callKind(invite.invite_type)})`);
  // ring back: the caller hears that this device rings (180)
  state.client.send(Cmd.VOIP_INVITE_REPLY, {
    user_id: state.me,
    rsp_code: InviteRspCode.RINGING,
    channel_info: { channel_name: channel },
  });
}

function onCallReply(reply) {
  const call = state.call;
  if (!call || reply.channel_info.channel_name !== call.channel) return;
  if (reply.rsp_code === InviteRspCode.RINGING) showCall(`Ringing ${nameOf(call.peer)}…`);
  if (reply.rsp_code === InviteRspCode.OK) {
    call.phase = "talking";
    showCall(`In a call with ${nameOf(call.peer)}`);
  }
}

function onCallBye(bye) {
  const call = state.call;
  if (!call || bye.channel_info.channel_name !== call.channel) return;
  const who = nameOf(call.peer);
  const reason = bye.bye_reason;
  let text = `${who} hung up`;
  if (reason === VoipByeReason.BUSY) text = `${who} is busy`;
  else if (reason === VoipByeReason.REJECT) text = `${who} declined`;
  else if (reason === VoipByeReason.ONLINE_CLIENT_REJECT) text = "Answered on another device";
  else if (reason === VoipByeReason.CANCEL) text = call.phase === "incoming" ? `Missed call from ${who}` : "No answer";
  endCall(text);
}

async function answerCall() {
  const call = state.call;
  if (!call || call.phase !== "incoming") return;
  try {
    await state.client.request(Cmd.VOIP_INVITE_REPLY, {
      user_id: state.me,
      rsp_code: InviteRspCode.OK,
      channel_info: { channel_name: call.channel },
    });
    call.phase = "talking";
    showCall(`In a call with ${nameOf(call.peer)}`);
  } catch (error) {
    endCall(`Cannot answer: ${error.message}`);
  }
}

async function hangUp() {
  const call = state.call;
  if (!call) return;
  const verb = { calling: "Call cancelled", incoming: "Call declined" }[call.phase] || "Call ended";
  endCall(verb);
  try {
    await state.client.request(Cmd.VOIP_BYE_REQ, {
      user_id: state.me,
      channel_info: { channel_name: call.channel },
      bye_reason: 0, // the server chooses: cancel, reject or end
    });
  } catch (error) {
    showCall(`${verb} (${error.message})`);
  }
}

function notificationPeople(msg) {
  if (msg.msg_type !== MsgType.NOTIFICATION) return [];
  try {
    const n = JSON.parse(textDecoder.decode(msg.msg_data));
    return [String(n.operator_user_id), ...(n.member_id_list || []).map(String)];
  } catch {
    return [];
  }
}

// -- times ------------------------------------------------------------------------------

function dateOf(seconds) {
  return new Date(Number(seconds) * 1000);
}

function shortTime(seconds) {
  const d = dateOf(seconds);
  const today = new Date();
  if (d.toDateString() === today.toDateString()) {
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  return d.toLocaleDateString([], { month: "short", day: "numeric" });
}

function dayLabel(seconds) {
  const d = dateOf(seconds);
  const today = new Date();
  const yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return "Today";
  if (d.toDateString() === yesterday.toDateString()) return "Yesterday";
  return d.toLocaleDateString([], { weekday: "long", month: "long", day: "numeric", year: "numeric" });
}

// A day line before the first message of each day, wherever messages were added.
function placeDaySeparators() {
  const list = $("messages");
  for (const li of list.querySelectorAll("li.day")) li.remove();
  let previous = "";
  for (const li of [...list.children]) {
    if (!li.dataset.time) continue;
    const day = dateOf(li.dataset.time).toDateString();
    if (day !== previous) {
      const sep = document.createElement("li");
      sep.className = "day";
      sep.setAttribute("role", "separator");
      sep.textContent = dayLabel(li.dataset.time);
      list.insertBefore(sep, li);
      previous = day;
    }
  }
}

// -- a conversation ---------------------------------------------------------------------

async function openConversation(type, id) {
  state.open = { type, id };
  state.items = new Map();
  state.oldest = null;
  state.readSent = 0n;
  state.peerRead = 0n;
  state.peerDelivered = 0n;
  for (const timer of state.typing.values()) clearTimeout(timer);
  state.typing.clear();
  renderTyping();
  $("messages").replaceChildren();
  $("chat-title").textContent = titleOf(type, id);
  $("chat-avatar").replaceChildren(avatar(type === SessionType.GROUP ? "g" : "u", id, titleOf(type, id)));
  $("chat").dataset.session = keyOf(type, id);
  document.body.dataset.view = "chat";
  $("compose").hidden = false;
  $("call").hidden = type !== SessionType.SINGLE;
  renderSessions();
  await loadHistory();
  markRead();
  startReadPoll();
  $("text").focus();
}

function closeConversation() {
  document.body.dataset.view = "list";
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
  await askNames(rsp.msg_list.flatMap((m) => [m.from_user_id, ...notificationPeople(m)]));
  // Older pages go above what is shown; the server lists each page oldest first.
  const list = $("messages");
  const first = list.firstChild;
  for (const info of rsp.msg_list) {
    const li = messageItem(info);
    if (li) list.insertBefore(li, first);
    // How far the peer has my messages, for a page that was not here when it was told.
    if (open.type === SessionType.SINGLE && info.from_user_id === state.me) {
      const seq = BigInt(info.server_msg_id);
      if (info.msg_status === MsgStatus.READ && seq > state.peerRead) state.peerRead = seq;
      if (info.msg_status === MsgStatus.RECEIPT && seq > state.peerDelivered) state.peerDelivered = seq;
    }
  }
  placeDaySeparators();
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
  const group = state.open && state.open.type === SessionType.GROUP;
  li.dataset.serverMsgId = msg.server_msg_id;
  li.dataset.clientMsgId = msg.client_msg_id;
  li.dataset.time = String(msg.create_time || Math.floor(Date.now() / 1000));
  li.dataset.from = msg.from_user_id;
  if (msg.msg_type === MsgType.NOTIFICATION) {
    li.className = "notice";
    li.notification = msg.msg_data; // written again when the names it mentions are learnt
    li.textContent = bodyText(msg.msg_type, msg.msg_data);
  } else {
    li.className = mine ? "msg mine" : "msg theirs";
    if (!mine) li.append(avatar("u", msg.from_user_id, nameOf(msg.from_user_id)));
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    if (!mine && group) bubble.append(nameSpan(msg.from_user_id, "from"));
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = bodyText(msg.msg_type, msg.msg_data);
    const meta = document.createElement("div");
    meta.className = "meta";
    const time = document.createElement("time");
    time.dateTime = dateOf(li.dataset.time).toISOString();
    time.textContent = dateOf(li.dataset.time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    meta.append(time);
    if (mine) {
      const ticks = document.createElement("span");
      ticks.className = "ticks";
      ticks.setAttribute("aria-hidden", "true");
      const st = document.createElement("span");
      st.className = "state";
      meta.append(ticks, st);
      if (Date.now() / 1000 - Number(li.dataset.time) < REVOKE_WINDOW_S) {
        const revoke = document.createElement("button");
        revoke.type = "button";
        revoke.className = "revoke";
        revoke.textContent = "Revoke";
        revoke.addEventListener("click", () => revokeMessage(li));
        meta.append(revoke);
      }
    }
    bubble.append(text, meta);
    li.append(bubble);
    if (mine) setState(li, "sent", "sent");
    if (msg.msg_status === MsgStatus.SEND_CANCEL) markRevoked(li, null);
  }
  if (!sending) state.items.set(msg.server_msg_id, li);
  state.items.set(msg.client_msg_id, li);
  return li;
}

function showMessage(msg) {
  const li = messageItem(msg);
  if (!li) return;
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  list.append(li);
  placeDaySeparators();
  if (atBottom || msg.from_user_id === state.me) list.scrollTop = list.scrollHeight;
  renderReadState();
}

function markRevoked(li, operator) {
  li.classList.add("revoked");
  const text = li.querySelector(".text");
  if (text) {
    const mine = li.dataset.from === state.me;
    text.textContent = mine ? "You revoked a message" : `${nameOf(li.dataset.from)} revoked a message`;
  }
  for (const el of li.querySelectorAll(".revoke, .state, .ticks")) el.remove();
  if (operator === "0") li.title = "revoked by the service";
}

async function revokeMessage(li) {
  const open = state.open;
  try {
    const rsp = await state.client.request(Cmd.REVOKE_REQ, {
      user_id: state.me,
      session_type: open.type,
      session_id: open.id,
      server_msg_id: li.dataset.serverMsgId,
      client_msg_id: li.dataset.clientMsgId,
    });
    if (rsp.result_code !== ExtResultCode.OK) throw new RequestError("refused", rsp.result_code);
    markRevoked(li, state.me);
    scheduleRefresh();
  } catch (error) {
    const expired = error.code === ExtResultCode.EXPIRED;
    setStatus(expired ? "too late to revoke that message" : `could not revoke: ${error.message}`);
    if (expired) li.querySelector(".revoke")?.remove();
  }
}

// Revoke buttons go once the server's window has passed.
setInterval(() => {
  const now = Date.now() / 1000;
  for (const button of document.querySelectorAll("#messages .revoke")) {
    const li = button.closest("li");
    if (now - Number(li.dataset.time) >= REVOKE_WINDOW_S) button.remove();
  }
}, 10_000);

// Ticks as chat apps show them: ✓ sent (stored), ✓✓ delivered (on a device of the peer),
// ✓✓ in colour once read; the word beside them says the same for screen readers.
const TICKS = Object.freeze({ sent: "✓", delivered: "✓✓", read: "✓✓" });

function setState(li, text, tick = "") {
  const st = li.querySelector(".state");
  if (!st) return;
  st.textContent = text;
  const ticks = li.querySelector(".ticks");
  if (ticks) ticks.textContent = TICKS[tick] || "";
  li.dataset.tick = tick;
}

// Under my messages: "sent", then "delivered" (a single chat's peer has it on a device,
// DeliveredNotify) and "read" (it read it, MsgDataReadNotify) — or history's msg_status
// RECEIPT / READ for what happened before the page was here; "read by k of n" in a group
// (GroupReadStateReq).
function renderReadState() {
  if (!state.open || state.open.type !== SessionType.SINGLE) return;
  for (const li of $("messages").querySelectorAll("li.mine:not(.revoked):not(.failed)")) {
    const seq = BigInt(li.dataset.serverMsgId || "0");
    if (seq === 0n) continue; // still sending
    if (seq <= state.peerRead) {
      setState(li, "read", "read");
      li.dataset.read = "true";
    } else if (seq <= state.peerDelivered) {
      setState(li, "delivered", "delivered");
    }
  }
}

function startReadPoll() {
  stopReadPoll();
  if (!state.open || state.open.type !== SessionType.GROUP) return;
  const poll = () => refreshGroupReadState().catch((error) => console.warn("coffeebus: read state", error));
  poll();
  state.readPoll = setInterval(poll, GROUP_READ_POLL_MS);
}

function stopReadPoll() {
  clearInterval(state.readPoll);
  state.readPoll = null;
}

async function refreshGroupReadState() {
  const open = state.open;
  if (!state.client || !open || open.type !== SessionType.GROUP || document.hidden) return;
  const mine = [...$("messages").querySelectorAll("li.mine:not(.revoked)")].filter((li) => li.dataset.serverMsgId !== "0").slice(-100);
  if (mine.length === 0) return;
  const rsp = await state.client.request(Cmd.GROUP_READ_STATE_REQ, {
    user_id: state.me,
    group_id: open.id,
    server_msg_id_list: mine.map((li) => li.dataset.serverMsgId),
  });
  if (state.open !== open) return;
  for (const rs of rsp.read_state_list) {
    const li = state.items.get(rs.server_msg_id);
    const st = li && li.querySelector(".state");
    if (!st) continue;
    // The sender's own read seq may count: the others are everyone but me.
    const selfCounted = state.readSent >= BigInt(rs.server_msg_id) ? 1 : 0;
    const others = Math.max(rs.member_count - 1, 0);
    const read = Math.min(Math.max(rs.read_count - selfCounted, 0), others);
    const text = read === 0 ? "sent" : read >= others ? `read by all ${others}` : `read by ${read} of ${others}`;
    setState(li, text, read >= others && others > 0 ? "read" : "sent");
    li.dataset.readBy = String(read);
  }
}

// Everything shown is read: one MsgDataReadAck for the newest message of the others
// (it has no answer). My own messages are not "read" by me: the peer would be told so.
function markRead() {
  const open = state.open;
  if (!open || !state.client || document.hidden) return;
  let newest = 0n;
  for (const li of $("messages").children) {
    if (li.dataset.from === state.me) continue;
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

function sendTyping(typingState) {
  const open = state.open;
  if (!open || !state.client) return;
  state.client.send(Cmd.TYPING_NOTIFY, {
    from_user_id: state.me,
    session_type: open.type,
    to_session_id: open.id,
    state: typingState,
  });
}

function onInput() {
  const now = Date.now();
  if ($("text").value === "") {
    if (state.typingSent) sendTyping(TypingState.STOPPED);
    state.typingSent = 0;
  } else if (now - state.typingSent > TYPING_EVERY_MS) {
    state.typingSent = now;
    sendTyping(TypingState.TYPING);
  }
}

async function send(event) {
  event.preventDefault();
  const input = $("text");
  const text = input.value;
  if (!text || !state.open || !state.client) return;
  input.value = "";
  if (state.typingSent) sendTyping(TypingState.STOPPED);
  state.typingSent = 0;
  const open = state.open;
  const msg = {
    from_user_id: state.me,
    from_nick_name: state.names.get(state.me) || "",
    to_session_id: open.id,
    client_msg_id: uuid4(),
    server_msg_id: "0",
    create_time: Math.floor(Date.now() / 1000),
    msg_type: MsgType.TEXT,
    session_type: open.type,
    msg_data: textEncoder.encode(text),
  };
  const li = messageItem(msg);
  setState(li, "sending…");
  $("messages").append(li);
  placeDaySeparators();
  $("messages").scrollTop = $("messages").scrollHeight;
  try {
    const ack = await state.client.request(Cmd.MSG_DATA, msg);
    if (ack.res_code !== ResCode.OK) throw new Error(`refused (res_code ${ack.res_code})`);
    li.dataset.serverMsgId = ack.server_msg_id;
    li.dataset.time = String(ack.create_time || msg.create_time);
    state.items.set(ack.server_msg_id, li);
    setState(li, "sent", "sent");
    renderReadState();
    if (open.type === SessionType.GROUP) refreshGroupReadState().catch(() => undefined);
  } catch (error) {
    li.classList.add("failed");
    setState(li, `not sent: ${error.message}`);
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
$("logout").addEventListener("click", () => {
  state.leaving = true;
  if (state.client) state.client.close();
  else showLogin("logged out");
});
$("compose").addEventListener("submit", send);
$("text").addEventListener("input", onInput);
$("group-form").addEventListener("submit", createGroup);
$("open-form").addEventListener("submit", openById);
$("older").addEventListener("click", () => loadHistory());
$("back").addEventListener("click", closeConversation);
$("call").addEventListener("click", startCall);
$("call-answer").addEventListener("click", answerCall);
$("call-hangup").addEventListener("click", hangUp);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) markRead();
});
start().catch((error) => setStatus(`cannot start: ${error.message}`));
