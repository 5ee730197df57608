// A lean Socket.IO client for the load generator: Socket.IO v5 text packets over Engine.IO v4 on a
// bare `ws` WebSocket, nothing else. socket.io-client runs every packet through engine.io-client's
// transport and parser and socket.io-parser's decoder and emitter: about a core at 25,000
// updates/s (50,000 deliveries/s), on a 2-core machine where the server measured needs the other.
// The bytes on the wire are the same: the same handshake, auth, events, acks and pong answers, and
// no compression (neither server accepts it by default).
//
// It offers the part of socket.io-client's socket the generator uses: on/once/off, emit (with an
// ack callback last), timeout(ms).emit, close, connected, and the connect / connect_error events
// (with err.data as the server sent it). Binary packets and reconnection are not supported.
"use strict";

const { EventEmitter } = require("node:events");
const WebSocket = require("ws");

const OPEN = 0x30; // "0": Engine.IO OPEN
const CLOSE = 0x31; // "1"
const PING = 0x32; // "2"
const MESSAGE = 0x34; // "4"

class LeanSocket extends EventEmitter {
  constructor(url, ns, opts) {
    super();
    this.connected = false;
    this.nsp = ns === "/" ? "" : `${ns},`;
    this._auth = opts.auth;
    this._acks = new Map();
    this._ackId = 0;
    this._handlers = new Map(); // event -> [fn]; server events, kept apart from connect/connect_error
    const u = new URL(url);
    const wsUrl = `${u.protocol === "https:" ? "wss" : "ws"}://${u.host}/socket.io/?EIO=4&transport=websocket`;
    this.ws = new WebSocket(wsUrl, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
      localAddress: opts.localAddress,
      handshakeTimeout: opts.timeout,
    });
    this._timer = setTimeout(() => this._fail(new Error("timeout")), opts.timeout);
    this.ws.on("message", (data) => this._onMessage(data.toString()));
    this.ws.on("error", (err) => this._fail(err));
    this.ws.on("close", () => {
      const was = this.connected;
      this.connected = false;
      if (was) super.emit("disconnect", "transport close");
      else this._fail(new Error("websocket error"));
    });
  }

  _fail(err) {
    clearTimeout(this._timer);
    if (this.connected || this._failed) return;
    this._failed = true;
    this.ws.terminate();
    super.emit("connect_error", err);
  }

  _onMessage(text) {
    const kind = text.charCodeAt(0);
    if (kind === MESSAGE) return this._onPacket(text);
    if (kind === PING) return this.ws.send("3");
    if (kind === OPEN) return this.ws.send(`40${this.nsp}${JSON.stringify(this._auth)}`);
    if (kind === CLOSE) return this.ws.close();
  }

  _onPacket(text) {
    // "4" + Socket.IO type + optional "/ns," + optional ack id + JSON
    const type = text.charCodeAt(1) - 0x30;
    let i = 2;
    if (text.charCodeAt(i) === 0x2f /* "/" */) i = text.indexOf(",", i) + 1;
    if (type === 2) {
      const [event, ...args] = JSON.parse(text.slice(i));
      const fns = this._handlers.get(event);
      if (fns) for (const fn of fns) fn(...args);
      return;
    }
    if (type === 3) {
      let j = i;
      while (text.charCodeAt(j) >= 0x30 && text.charCodeAt(j) <= 0x39) j++;
      const id = Number(text.slice(i, j));
      const cb = this._acks.get(id);
      if (cb) {
        this._acks.delete(id);
        cb(null, ...JSON.parse(text.slice(j)));
      }
      return;
    }
    if (type === 0) {
      clearTimeout(this._timer);
      this.connected = true;
      super.emit("connect");
      return;
    }
    if (type === 4) {
      const err = JSON.parse(text.slice(i));
      const e = new Error(err.message);
      e.data = err.data;
      this._fail(e);
      return;
    }
    if (type === 1) this.ws.close();
  }

  on(event, fn) {
    if (event === "connect" || event === "connect_error" || event === "disconnect") return super.on(event, fn);
    const fns = this._handlers.get(event);
    if (fns) fns.push(fn);
    else this._handlers.set(event, [fn]);
    return this;
  }

  // Returns the ack id (0: no ack asked).
  emit(event, ...args) {
    const cb = typeof args[args.length - 1] === "function" ? args.pop() : null;
    const id = cb === null ? 0 : ++this._ackId;
    if (cb !== null) this._acks.set(id, cb);
    this.ws.send(`42${this.nsp}${id || ""}${JSON.stringify([event, ...args])}`);
    return id;
  }

  timeout(ms) {
    return {
      emit: (event, ...args) => {
        const cb = args.pop();
        let timer = null;
        const id = this.emit(event, ...args, (err, ...rest) => {
          clearTimeout(timer);
          cb(err, ...rest);
        });
        timer = setTimeout(() => {
          this._acks.delete(id);
          cb(new Error("operation has timed out"));
        }, ms);
      },
    };
  }

  close() {
    clearTimeout(this._timer);
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(`41${this.nsp}`);
    this.connected = false;
    this.ws.close();
  }
}

/** ``io(url + ns, opts)`` of socket.io-client, for the options the load generator passes. */
function leanIo(urlWithNs, opts) {
  const u = new URL(urlWithNs);
  return new LeanSocket(`${u.protocol}//${u.host}`, u.pathname || "/", opts);
}

module.exports = { leanIo };
