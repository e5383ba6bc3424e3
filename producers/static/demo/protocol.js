// The CoffeeChat client protocol in the browser: frame codec, command table, and a gate
// client over one WebSocket (PROTOCOL.md; docs/web-demo.md).
//
// One binary WebSocket message is one frame: a 16-byte big-endian header (length, version,
// flag, service id, command id, seq, reserved) and a protobuf body. Bodies are encoded by
// protobuf.js (the global `protobuf`, vendored from npm) from the project's .proto files,
// fetched at run time from the API so that they are the ones the server was built from.
// uint64 ids travel as decimal strings in this module's API (long.js keeps them exact).

/* global protobuf */

export const HEADER_SIZE = 16;
export const VERSION = 1;
export const MAX_SEQ = 0xffff;

// Command ids (PROTOCOL.md, "Command ids"; extensions from coffeebus/ext.proto). The
// subset this client sends or understands; a test compares it with schemas/commands.py.
export const Cmd = Object.freeze({
  AUTH_TOKEN_REQ: 0x0101,
  AUTH_TOKEN_RSP: 0x0102,
  LOGOUT_REQ: 0x0103,
  LOGOUT_RSP: 0x0104,
  HEARTBEAT: 0x0105,
  RECENT_SESSION_REQ: 0x0201,
  RECENT_SESSION_RSP: 0x0202,
  MSG_LIST_REQ: 0x0205,
  MSG_LIST_RSP: 0x0206,
  MSG_DATA: 0x0301,
  MSG_DATA_ACK: 0x0302,
  MSG_READ_ACK: 0x0303,
  MSG_READ_NOTIFY: 0x0304,
  VOIP_INVITE_REQ: 0x0401,
  VOIP_INVITE_REPLY: 0x0402,
  VOIP_INVITE_REPLY_ACK: 0x0403,
  VOIP_HEARTBEAT: 0x0404,
  VOIP_BYE_REQ: 0x0405,
  VOIP_BYE_RSP: 0x0406,
  VOIP_BYE_NOTIFY: 0x0407,
  GROUP_CREATE_REQ: 0x0501,
  GROUP_CREATE_RSP: 0x0502,
  GROUP_INFO_REQ: 0x0509,
  GROUP_INFO_RSP: 0x0510,
  GROUP_MEMBER_CHANGED_NOTIFY: 0x0515,
  FRIEND_QUERY_USER_LIST_REQ: 0x0601,
  FRIEND_QUERY_USER_LIST_RSP: 0x0602,
  KICK_NOTIFY: 0x0801,
  ERROR_RSP: 0x0802,
  SYNC_REQ: 0x0803,
  SYNC_RSP: 0x0804,
  REVOKE_REQ: 0x0805,
  REVOKE_RSP: 0x0806,
  REVOKE_NOTIFY: 0x0807,
  TYPING_NOTIFY: 0x0808,
  S2C_PUSH: 0x080b,
  GROUP_READ_STATE_REQ: 0x080d,
  GROUP_READ_STATE_RSP: 0x080e,
  DELIVERED_NOTIFY: 0x0820,
});

// Body message of each command (protobuf full names).
export const BODY = Object.freeze({
  [Cmd.AUTH_TOKEN_REQ]: "coffeechat.AuthTokenReq",
  [Cmd.AUTH_TOKEN_RSP]: "coffeechat.AuthTokenRsp",
  [Cmd.LOGOUT_REQ]: "coffeechat.LogoutReq",
  [Cmd.LOGOUT_RSP]: "coffeechat.LogoutRsp",
  [Cmd.HEARTBEAT]: "coffeechat.HeartBeat",
  [Cmd.RECENT_SESSION_REQ]: "coffeechat.RecentContactSessionReq",
  [Cmd.RECENT_SESSION_RSP]: "coffeechat.RecentContactSessionRsp",
  [Cmd.MSG_LIST_REQ]: "coffeechat.GetMsgListReq",
  [Cmd.MSG_LIST_RSP]: "coffeechat.GetMsgListRsp",
  [Cmd.MSG_DATA]: "coffeechat.MsgData",
  [Cmd.MSG_DATA_ACK]: "coffeechat.MsgDataAck",
  [Cmd.MSG_READ_ACK]: "coffeechat.MsgDataReadAck",
  [Cmd.MSG_READ_NOTIFY]: "coffeechat.MsgDataReadNotify",
  [Cmd.VOIP_INVITE_REQ]: "coffeechat.VoipInviteReq",
  [Cmd.VOIP_INVITE_REPLY]: "coffeechat.VoipInviteReply",
  [Cmd.VOIP_INVITE_REPLY_ACK]: "coffeechat.VoipInviteReplyAck",
  [Cmd.VOIP_HEARTBEAT]: "coffeechat.VoipHeartbeat",
  [Cmd.VOIP_BYE_REQ]: "coffeechat.VoipByeReq",
  [Cmd.VOIP_BYE_RSP]: "coffeechat.VoipByeRsp",
  [Cmd.VOIP_BYE_NOTIFY]: "coffeechat.VoipByeNotify",
  [Cmd.GROUP_CREATE_REQ]: "coffeechat.GroupCreateReq",
  [Cmd.GROUP_CREATE_RSP]: "coffeechat.GroupCreateRsp",
  [Cmd.GROUP_INFO_REQ]: "coffeechat.GroupInfoReq",
  [Cmd.GROUP_INFO_RSP]: "coffeechat.GroupInfoRsp",
  [Cmd.GROUP_MEMBER_CHANGED_NOTIFY]: "coffeechat.GroupMemberChangedNotify",
  [Cmd.FRIEND_QUERY_USER_LIST_REQ]: "coffeechat.FriendQueryUserListReq",
  [Cmd.FRIEND_QUERY_USER_LIST_RSP]: "coffeechat.FriendQueryUserListRsp",
  [Cmd.KICK_NOTIFY]: "coffeebus.KickNotify",
  [Cmd.ERROR_RSP]: "coffeebus.ErrorRsp",
  [Cmd.SYNC_REQ]: "coffeebus.SyncReq",
  [Cmd.SYNC_RSP]: "coffeebus.SyncRsp",
  [Cmd.REVOKE_REQ]: "coffeebus.RevokeReq",
  [Cmd.REVOKE_RSP]: "coffeebus.RevokeRsp",
  [Cmd.REVOKE_NOTIFY]: "coffeebus.RevokeNotify",
  [Cmd.TYPING_NOTIFY]: "coffeebus.TypingNotify",
  [Cmd.S2C_PUSH]: "coffeebus.S2CPush",
  [Cmd.GROUP_READ_STATE_REQ]: "coffeebus.GroupReadStateReq",
  [Cmd.GROUP_READ_STATE_RSP]: "coffeebus.GroupReadStateRsp",
  [Cmd.DELIVERED_NOTIFY]: "coffeebus.DeliveredNotify",
});

// The response command of each request this client makes.
export const RESPONSE = Object.freeze({
  [Cmd.AUTH_TOKEN_REQ]: Cmd.AUTH_TOKEN_RSP,
  [Cmd.LOGOUT_REQ]: Cmd.LOGOUT_RSP,
  [Cmd.RECENT_SESSION_REQ]: Cmd.RECENT_SESSION_RSP,
  [Cmd.MSG_LIST_REQ]: Cmd.MSG_LIST_RSP,
  [Cmd.MSG_DATA]: Cmd.MSG_DATA_ACK,
  [Cmd.VOIP_INVITE_REQ]: Cmd.VOIP_INVITE_REPLY,
  [Cmd.VOIP_INVITE_REPLY]: Cmd.VOIP_INVITE_REPLY_ACK,
  [Cmd.VOIP_BYE_REQ]: Cmd.VOIP_BYE_RSP,
  [Cmd.GROUP_CREATE_REQ]: Cmd.GROUP_CREATE_RSP,
  [Cmd.GROUP_INFO_REQ]: Cmd.GROUP_INFO_RSP,
  [Cmd.FRIEND_QUERY_USER_LIST_REQ]: Cmd.FRIEND_QUERY_USER_LIST_RSP,
  [Cmd.SYNC_REQ]: Cmd.SYNC_RSP,
  [Cmd.REVOKE_REQ]: Cmd.REVOKE_RSP,
  [Cmd.GROUP_READ_STATE_REQ]: Cmd.GROUP_READ_STATE_RSP,
});

// Enum values used here (PROTOCOL.md, "Enums").
export const ErrorCode = Object.freeze({
  SUCCESS: 200,
  LOGIN_DB_VALIDATE_FAILED: 2000,
  LOGIN_VERSION_TOO_OLD: 2001,
  LOGIN_INVALID_USER_TOKEN: 2002,
  LOGIN_INVALID_USER_OR_PWD: 2003,
});
export const ExtResultCode = Object.freeze({
  OK: 1,
  NOT_AUTHENTICATED: 2,
  FORBIDDEN: 6,
  NOT_FOUND: 7,
  RATE_LIMITED: 8,
  EXPIRED: 10,
  INTERNAL_ERROR: 11,
  UNAVAILABLE: 12,
});
export const ClientType = Object.freeze({ WEB: 3 });
export const SessionType = Object.freeze({ SINGLE: 1, GROUP: 2 });
export const MsgType = Object.freeze({ TEXT: 1, TIPS: 8, NOTIFICATION: 9, AVCHAT: 10 });
// VoIP signalling (coffeechat/voip.proto; docs/protocol-extensions.md, "Calls").
export const VoipInviteType = Object.freeze({ VOICE_CALL: 1, VIDEO_CALL: 2 });
export const InviteRspCode = Object.freeze({ TRYING: 100, RINGING: 180, OK: 200 });
export const VoipByeReason = Object.freeze({
  CANCEL: 1,
  REJECT: 2,
  END: 3,
  BUSY: 4,
  ONLINE_CLIENT_REJECT: 5,
});
export const MsgStatus = Object.freeze({ READ: 2, RECEIPT: 6, SEND_CANCEL: 8 });
export const ResCode = Object.freeze({ OK: 1 });
export const KickReason = Object.freeze({ SERVER_SHUTDOWN: 5 });
export const TypingState = Object.freeze({ TYPING: 1, STOPPED: 2 });

// The .proto files the client needs; their imports are found the way protoc -I finds them.
export const PROTO_FILES = Object.freeze([
  "coffeechat/base.proto",
  "coffeechat/login.proto",
  "coffeechat/list.proto",
  "coffeechat/message.proto",
  "coffeechat/group.proto",
  "coffeechat/friend.proto",
  "coffeechat/voip.proto",
  "coffeebus/ext.proto",
]);

export class ProtocolError extends Error {}

/** A request the server rejected: a result code other than success, or an ErrorRsp. */
export class RequestError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

/** The WebSocket could not be opened (nothing listens there, or it is not a gate). */
export class ConnectError extends Error {}

/** Encode one frame: header + body (a Uint8Array). */
export function encodeFrame(commandId, seq, body, { flag = 0, serviceId = 0 } = {}) {
  const frame = new Uint8Array(HEADER_SIZE + body.length);
  const view = new DataView(frame.buffer);
  view.setUint32(0, frame.length, false);
  view.setUint16(4, VERSION, false);
  view.setUint16(6, flag, false);
  view.setUint16(8, serviceId, false);
  view.setUint16(10, commandId, false);
  view.setUint16(12, seq, false);
  view.setUint16(14, 0, false);
  frame.set(body, HEADER_SIZE);
  return frame;
}

/** Decode one frame (an ArrayBuffer or Uint8Array holding exactly one frame). */
export function decodeFrame(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.length < HEADER_SIZE) {
    throw new ProtocolError(`frame of ${bytes.length} bytes is shorter than its header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = view.getUint32(0, false);
  if (length !== bytes.length) {
    throw new ProtocolError(`frame length ${length} but the message has ${bytes.length} bytes`);
  }
  return {
    length,
    version: view.getUint16(4, false),
    flag: view.getUint16(6, false),
    serviceId: view.getUint16(8, false),
    commandId: view.getUint16(10, false),
    seq: view.getUint16(12, false),
    reserved: view.getUint16(14, false),
    body: bytes.subarray(HEADER_SIZE),
  };
}

/** The next request seq after `seq`: 1..65535, wrapping to 1. */
export function nextSeq(seq) {
  return seq >= MAX_SEQ ? 1 : seq + 1;
}

/** Load the protocol's .proto files from `base` (the API's /demo/proto/). */
export async function loadSchemas(base = "/demo/proto/") {
  if (typeof protobuf === "undefined" || !protobuf.util.Long) {
    throw new Error("protobuf.js and long.js must be loaded before protocol.js");
  }
  const root = new protobuf.Root();
  // Imports name files from the include root (schemas/proto), as protoc -I does.
  root.resolvePath = (_origin, target) => base + target;
  await root.load([...PROTO_FILES], { keepCase: true });
  root.resolveAll();
  return new Codec(root);
}

/** Command bodies to and from plain objects (snake_case fields, ids as decimal strings). */
export class Codec {
  constructor(root) {
    this.root = root;
    this.types = new Map();
    for (const [cmd, name] of Object.entries(BODY)) {
      this.types.set(Number(cmd), root.lookupType(name));
    }
  }

  type(name) {
    return this.root.lookupType(name);
  }

  encode(commandId, object) {
    const type = this.types.get(commandId);
    if (!type) throw new ProtocolError(`no body type for command 0x${hex(commandId)}`);
    // fromObject, not verify: verify refuses ids given as decimal strings, which fromObject
    // turns into exact Longs.
    return type.encode(type.fromObject(object)).finish();
  }

  decode(commandId, body) {
    const type = this.types.get(commandId);
    return type ? this.toObject(type, type.decode(body)) : null;
  }

  decodeAs(name, body) {
    const type = this.type(name);
    return this.toObject(type, type.decode(body));
  }

  toObject(type, message) {
    return type.toObject(message, { longs: String, enums: Number, defaults: true });
  }
}

export function hex(n) {
  return n.toString(16).padStart(4, "0");
}

/**
 * One connection to a gate. Requests are matched to responses by seq and response command
 * (or failed by an ErrorRsp echoing their seq); every other frame is a push, dispatched as a
 * "push" event ({commandId, seq, message}). Pushed MsgData is acknowledged (MsgDataAck
 * echoing the push's seq) before listeners see it. "close" fires once, with {code, reason}.
 */
export class GateClient extends EventTarget {
  constructor(codec, { requestTimeoutMs = 10000, heartbeatMs = 30000 } = {}) {
    super();
    this.codec = codec;
    this.requestTimeoutMs = requestTimeoutMs;
    this.heartbeatMs = heartbeatMs;
    this.ws = null;
    this.userId = null;
    this.seq = 0;
    this.pending = new Map(); // seq -> {request, response, resolve, reject, timer}
    this.heartbeat = null;
    this.closed = false;
  }

  /** Open the WebSocket; resolves once it is open. */
  connect(url) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (error) {
        reject(new ConnectError(`not a WebSocket address: ${url} (${error.message})`));
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        resolve();
      };
      ws.onmessage = (event) => this.received(event.data);
      ws.onclose = (event) => {
        if (!opened) reject(new ConnectError(`cannot connect to ${url} (close code ${event.code})`));
        this.lost(event.code, event.reason || (opened ? "connection closed" : "cannot connect"));
      };
    });
  }

  /** AuthTokenReq; resolves with the AuthTokenRsp, rejects unless it is a success. */
  async login(userId, token, { nickName = "", clientVersion = "coffeebus-web-demo/1" } = {}) {
    const rsp = await this.request(Cmd.AUTH_TOKEN_REQ, {
      user_id: String(userId),
      nick_name: nickName,
      user_token: token,
      client_type: ClientType.WEB,
      client_version: clientVersion,
    });
    if (rsp.result_code !== ErrorCode.SUCCESS) {
      throw new RequestError(rsp.result_string || `login refused (${rsp.result_code})`, rsp.result_code);
    }
    this.userId = String(userId);
    this.heartbeat = setInterval(() => this.send(Cmd.HEARTBEAT, {}), this.heartbeatMs);
    return rsp;
  }

  /** Send a request and resolve with its response's body as an object. */
  request(commandId, object, { timeoutMs = this.requestTimeoutMs } = {}) {
    const response = RESPONSE[commandId];
    if (response === undefined) throw new ProtocolError(`0x${hex(commandId)} has no response`);
    const body = this.codec.encode(commandId, object);
    const seq = this.takeSeq();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new RequestError(`no answer to 0x${hex(commandId)} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(seq, { request: commandId, response, resolve, reject, timer });
      this.write(encodeFrame(commandId, seq, body));
    });
  }

  /** Send a frame that has no response (read ack, heartbeat). */
  send(commandId, object, seq = this.takeSeq()) {
    this.write(encodeFrame(commandId, seq, this.codec.encode(commandId, object)));
  }

  close() {
    if (this.ws) this.ws.close(1000, "bye");
  }

  takeSeq() {
    // Skip seqs still waiting for their answer: a wrapped seq must not match an old request.
    for (let i = 0; i < MAX_SEQ; i++) {
      this.seq = nextSeq(this.seq);
      if (!this.pending.has(this.seq)) return this.seq;
    }
    throw new ProtocolError("every seq is waiting for an answer");
  }

  write(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new ProtocolError("not connected");
    this.ws.send(frame);
  }

  received(data) {
    let frame;
    try {
      frame = decodeFrame(data);
    } catch (error) {
      // A malformed frame from the server: the connection cannot be trusted any more.
      console.error("coffeebus:", error);
      this.ws.close(1002, "malformed frame");
      return;
    }
    const waiting = this.pending.get(frame.seq);
    if (waiting && (frame.commandId === waiting.response || frame.commandId === Cmd.ERROR_RSP)) {
      this.pending.delete(frame.seq);
      clearTimeout(waiting.timer);
      const message = this.codec.decode(frame.commandId, frame.body);
      if (frame.commandId === Cmd.ERROR_RSP) {
        waiting.reject(new RequestError(message.text || `rejected (${message.result_code})`, message.result_code));
      } else {
        waiting.resolve(message);
      }
      return;
    }
    const message = this.codec.decode(frame.commandId, frame.body);
    if (frame.commandId === Cmd.MSG_DATA && message) this.ackReceipt(message, frame.seq);
    this.dispatchEvent(new CustomEvent("push", { detail: { commandId: frame.commandId, seq: frame.seq, message } }));
  }

  ackReceipt(msg, seq) {
    // The receiver's MsgDataAck names the conversation as the receiver sees it.
    const group = msg.session_type === SessionType.GROUP;
    this.send(
      Cmd.MSG_DATA_ACK,
      {
        from_user_id: this.userId,
        to_session_id: group ? msg.to_session_id : msg.from_user_id,
        client_msg_id: msg.client_msg_id,
        server_msg_id: msg.server_msg_id,
        res_code: ResCode.OK,
        session_type: msg.session_type,
        create_time: msg.create_time,
      },
      seq,
    );
  }

  lost(code, reason) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    for (const waiting of this.pending.values()) {
      clearTimeout(waiting.timer);
      waiting.reject(new RequestError(`connection closed: ${reason}`));
    }
    this.pending.clear();
    this.dispatchEvent(new CustomEvent("close", { detail: { code, reason } }));
  }
}

/** The conversation a MsgData belongs to, as `me` sees it: {type, id}. */
export function conversationOf(msg, me) {
  if (msg.session_type === SessionType.GROUP) return { type: SessionType.GROUP, id: msg.to_session_id };
  return { type: SessionType.SINGLE, id: msg.from_user_id === me ? msg.to_session_id : msg.from_user_id };
}

/** A random (v4) UUID; crypto.randomUUID exists only in secure contexts, this everywhere. */
export function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
