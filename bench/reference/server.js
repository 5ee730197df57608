#!/usr/bin/env node
// Reference server for the benchmarks: Node socket.io 4.x doing the gateway's job on the same
// wire contract (namespaces, JWT check, order authorization, events, rooms, payloads, /api/events),
// so a benchmark can report ours / reference as a ratio measured in one run.
//
// Environment (same names as the gateway where they mean the same thing):
//   RTG_HOST, RTG_PORT          listen address (default 127.0.0.1:8090)
//   RTG_JWT_SECRET              HS256 secret for client tokens (required)
//   RTG_API_KEY                 service credential for POST /api/events
//   RTG_REDIS_URL               when set: @socket.io/redis-adapter in sharded mode (Redis >= 7) and
//                               order authorization kept in Redis, so several processes act as one
"use strict";

const http = require("node:http");
const crypto = require("node:crypto");
const { Server } = require("socket.io");
const jwt = require("jsonwebtoken");

const HOST = process.env.RTG_HOST || "127.0.0.1";
const PORT = Number(process.env.RTG_PORT || 8090);
const SECRET = process.env.RTG_JWT_SECRET;
const API_KEY = process.env.RTG_API_KEY || "";
const REDIS_URL = process.env.RTG_REDIS_URL || "";
const NAMESPACE_ROLES = { "/client": "customer", "/porter": "porter", "/admin": "admin" };
const ORDER_TTL_S = 24 * 3600;
const LOCATION_TTL_S = 3600;
const RECONNECT_TTL_S = 300;

if (!SECRET) {
  console.error("RTG_JWT_SECRET is required");
  process.exit(2);
}

// ---- order authorization state: in memory, or in Redis when several processes share it --------
class MemoryStore {
  constructor() {
    this.orders = new Map(); // orderId -> {customerId, porterId}
    this.porterOrders = new Map(); // porterId -> Set(orderId)
    this.locations = new Map();
    this.seen = new Set();
  }
  async firstSeen(eventId) {
    if (this.seen.has(eventId)) return false;
    this.seen.add(eventId);
    return true;
  }
  async orderCreated(orderId, customerId) {
    const o = this.orders.get(orderId) || {};
    o.customerId = customerId;
    this.orders.set(orderId, o);
  }
  async orderAssigned(orderId, porterId) {
    const o = this.orders.get(orderId) || {};
    o.porterId = porterId;
    this.orders.set(orderId, o);
    if (!this.porterOrders.has(porterId)) this.porterOrders.set(porterId, new Set());
    this.porterOrders.get(porterId).add(orderId);
  }
  async order(orderId) {
    return this.orders.get(orderId) || null;
  }
  async putLocation(porterId, json) {
    this.locations.set(porterId, json);
    return this.porterOrders.get(porterId) || [];
  }
}

class RedisStore {
  constructor(client) {
    this.r = client;
  }
  async firstSeen(eventId) {
    return (await this.r.set(`event:seen:${eventId}`, "1", { NX: true, EX: ORDER_TTL_S })) === "OK";
  }
  async orderCreated(orderId, customerId) {
    await this.r.multi().hSet(`order:auth:${orderId}`, "customerId", customerId).expire(`order:auth:${orderId}`, ORDER_TTL_S).exec();
  }
  async orderAssigned(orderId, porterId) {
    await this.r
      .multi()
      .hSet(`order:auth:${orderId}`, "porterId", porterId)
      .expire(`order:auth:${orderId}`, ORDER_TTL_S)
      .sAdd(`porter:orders:${porterId}`, orderId)
      .expire(`porter:orders:${porterId}`, ORDER_TTL_S)
      .exec();
  }
  async order(orderId) {
    const h = await this.r.hGetAll(`order:auth:${orderId}`);
    return h && Object.keys(h).length ? h : null;
  }
  async putLocation(porterId, json) {
    // As the gateway does: one round trip writes the last location and reads the porter's orders,
    // so an assignment made after the porter connected takes effect on the next update.
    const [, orders] = await this.r
      .multi()
      .set(`porter:location:${porterId}`, json, { EX: LOCATION_TTL_S })
      .sMembers(`porter:orders:${porterId}`)
      .execAsPipeline();
    return orders;
  }
}

function authError(code, message) {
  const err = new Error(message);
  err.data = { code, message };
  return err;
}

function verifyToken(socket) {
  const auth = socket.handshake.auth || {};
  let token = typeof auth.token === "string" ? auth.token : null;
  if (!token) {
    const h = socket.handshake.headers.authorization || "";
    if (h.startsWith("Bearer ")) token = h.slice(7);
  }
  if (!token) throw authError("AUTH_REQUIRED", "a token is required");
  try {
    return jwt.verify(token, SECRET, { algorithms: ["HS256"], clockTolerance: 30 });
  } catch (e) {
    if (e.name === "TokenExpiredError") throw authError("AUTH_EXPIRED", "token expired");
    throw authError("AUTH_INVALID", "invalid token");
  }
}

function fail(code, message) {
  return { ok: false, error: { code, message } };
}

function isNum(v) {
  return typeof v === "number" && Number.isFinite(v);
}

async function main() {
  let store = new MemoryStore();
  const httpServer = http.createServer();
  const io = new Server(httpServer, { transports: ["websocket", "polling"], serveClient: false });

  if (REDIS_URL) {
    const { createClient } = require("redis");
    const { createShardedAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: REDIS_URL });
    const sub = pub.duplicate();
    const data = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect(), data.connect()]);
    io.adapter(createShardedAdapter(pub, sub, { subscriptionMode: "dynamic" }));
    store = new RedisStore(data);
  }

  async function handleEvent(env) {
    if (!env || typeof env.eventId !== "string" || typeof env.type !== "string" || typeof env.payload !== "object") {
      return [400, fail("VALIDATION", "bad envelope")];
    }
    if (!(await store.firstSeen(env.eventId))) return [200, { ok: true, duplicate: true }];
    const p = env.payload;
    switch (env.type) {
      case "order.created":
        await store.orderCreated(p.orderId, p.customerId);
        break;
      case "order.assigned":
        await store.orderAssigned(p.orderId, p.porterId);
        break;
      case "order.status_changed":
        io.of("/client")
          .to(`order:${p.orderId}`)
          .emit("order:status", { ...p, eventId: env.eventId, occurredAt: env.occurredAt });
        io.of("/admin")
          .to(`order:${p.orderId}`)
          .emit("order:status", { ...p, eventId: env.eventId, occurredAt: env.occurredAt });
        io.of("/porter")
          .to(`order:${p.orderId}`)
          .emit("order:status", { ...p, eventId: env.eventId, occurredAt: env.occurredAt });
        break;
      default:
        break;
    }
    return [202, { ok: true }];
  }

  httpServer.on("request", (req, res) => {
    if (req.url && req.url.startsWith("/socket.io/")) return; // engine.io answers these
    if (req.method === "GET" && (req.url === "/healthz" || req.url === "/readyz")) {
      res.writeHead(200, { "content-type": "application/json" });
      return res.end('{"status":"ok"}');
    }
    if (req.method === "POST" && req.url === "/api/events") {
      const key = req.headers["x-api-key"] || (req.headers.authorization || "").replace(/^Bearer /, "");
      if (!API_KEY || key !== API_KEY) {
        res.writeHead(401, { "content-type": "application/json" });
        return res.end(JSON.stringify(fail("AUTH_INVALID", "service credential required")));
      }
      const chunks = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", async () => {
        let status = 500;
        let body;
        try {
          const parsed = JSON.parse(Buffer.concat(chunks).toString("utf8"));
          // A batch is a list of envelopes; one envelope is the common case.
          if (Array.isArray(parsed)) {
            for (const env of parsed) await handleEvent(env);
            [status, body] = [202, { ok: true, accepted: parsed.length }];
          } else {
            [status, body] = await handleEvent(parsed);
          }
        } catch (e) {
          [status, body] = [400, fail("VALIDATION", String(e.message || e))];
        }
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      });
      return;
    }
    res.writeHead(404);
    res.end();
  });

  for (const [ns, role] of Object.entries(NAMESPACE_ROLES)) {
    const nsp = io.of(ns);
    nsp.use((socket, next) => {
      let claims;
      try {
        claims = verifyToken(socket);
      } catch (e) {
        return next(e);
      }
      if (claims.role !== role) return next(authError("FORBIDDEN_NAMESPACE", `role ${claims.role} may not use ${ns}`));
      socket.data.userId = String(claims.sub);
      socket.data.role = claims.role;
      next();
    });

    nsp.on("connection", (socket) => {
      const { userId } = socket.data;
      socket.emit("session", {
        userId,
        role,
        reconnectToken: crypto.randomBytes(16).toString("hex"),
        reconnectTokenExpiresIn: RECONNECT_TTL_S,
      });

      socket.on("order:subscribe", async (payload, ack) => {
        const reply = typeof ack === "function" ? ack : () => {};
        const orderId = payload && payload.orderId;
        if (typeof orderId !== "string" || !orderId) return reply(fail("VALIDATION", "orderId required"));
        if (role !== "admin") {
          const o = await store.order(orderId);
          if (!o) return reply(fail("NOT_FOUND", "unknown order"));
          const mine = role === "customer" ? o.customerId === userId : o.porterId === userId;
          if (!mine) return reply(fail("FORBIDDEN", "not your order"));
        }
        socket.join(`order:${orderId}`);
        reply({ ok: true, orderId });
      });

      socket.on("order:unsubscribe", (payload, ack) => {
        const orderId = payload && payload.orderId;
        if (typeof orderId === "string") socket.leave(`order:${orderId}`);
        if (typeof ack === "function") ack({ ok: true, orderId });
      });

      if (role === "porter") {
        socket.on("location:update", async (p, ack) => {
          if (!p || !isNum(p.lat) || !isNum(p.lng) || Math.abs(p.lat) > 90 || Math.abs(p.lng) > 180 || !isNum(p.timestamp)) {
            if (typeof ack === "function") ack(fail("VALIDATION", "lat, lng and timestamp are required"));
            return;
          }
          const msg = {
            porterId: userId,
            lat: p.lat,
            lng: p.lng,
            heading: isNum(p.heading) ? p.heading : null,
            speed: isNum(p.speed) ? p.speed : null,
            accuracy: isNum(p.accuracy) ? p.accuracy : null,
            timestamp: p.timestamp,
          };
          let orders;
          try {
            orders = await store.putLocation(userId, JSON.stringify(msg));
          } catch (e) {
            if (typeof ack === "function") ack(fail("INTERNAL", "state store unavailable"));
            return;
          }
          for (const orderId of orders) {
            const out = { orderId, ...msg };
            io.of("/client").to(`order:${orderId}`).emit("porter:location", out);
            io.of("/admin").to(`order:${orderId}`).emit("porter:location", out);
          }
          if (typeof ack === "function") ack({ ok: true });
        });
      }
    });
  }

  httpServer.listen(PORT, HOST, () => {
    console.log(`reference listening on http://${HOST}:${PORT} (${REDIS_URL ? "redis sharded adapter" : "embedded"})`);
  });
  const stop = () => {
    io.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
