#!/usr/bin/env node
// Load generator: many socket.io-client sockets in one process, driven by the Python orchestrator
// (bench/run.py) over stdin/stdout, one JSON object per line.
//
//   argv[2]: path of a JSON config {mode: "L"|"C"|"K", secret, urls, ...} (see bench/loadgen.py)
//   stdout:  {"type":"ready",...} once set up, then one result line per command, {"type":"bye"} at exit;
//            a collect first answers {"type":"collecting"} once it counts (events before are not)
//   stdin:   {"cmd":"step",rate,seconds,startAt,drainMs} | {"cmd":"collect",expect,timeoutMs,from,overMs}
//            | {"cmd":"quit"}  (collect counts the events later than overMs per 100 ms window)
//
// Latency is receive time minus the send time carried in the payload (same machine, same clock),
// kept as a histogram of whole milliseconds that the orchestrator merges across processes.
"use strict";

const fs = require("node:fs");
const readline = require("node:readline");
const { io } = require("socket.io-client");
const jwt = require("jsonwebtoken");
const { leanIo } = require("./lean");

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
// cfg.client: "lean" (lean.js, the same packets for a fraction of the CPU) or "socket.io".
const connectSocket = cfg.client === "lean" ? leanIo : io;
const log = (...a) => process.stderr.write(`[loadgen ${cfg.workerId ?? 0}] ${a.join(" ")}\n`);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const sockets = [];
let addrIndex = 0;

function token(sub, role) {
  const now = Math.floor(Date.now() / 1000);
  return jwt.sign({ sub, role, iat: now, exp: now + 3600 }, cfg.secret, { algorithm: "HS256" });
}

function nextLocalAddress() {
  // Spread the client side over 127.0.x.y (as many addresses as asked) so no source address runs
  // out of ports and per-address connect limits see what a crowd of devices would look like.
  const n = cfg.localAddresses || 1;
  if (n <= 1) return undefined;
  const k = addrIndex++ % n;
  return `127.0.${Math.floor(k / 250)}.${2 + (k % 250)}`;
}

let connectRetries = 0;
const connectRefusals = {};

async function connect(url, ns, sub, role) {
  // A refused or failed connect is retried with backoff, as a real client would reconnect; the
  // retries are counted and reported so a server that needs them is visible in the results.
  const attempts = cfg.connectAttempts || 5;
  for (let a = 1; ; a++) {
    try {
      return await connectOnce(url, ns, sub, role);
    } catch (e) {
      const code = e.code || "unknown";
      connectRefusals[code] = (connectRefusals[code] || 0) + 1;
      if (a >= attempts || code === "AUTH_INVALID" || code === "FORBIDDEN_NAMESPACE") throw e;
      connectRetries++;
      await sleep(250 * a + Math.random() * 250);
    }
  }
}

function connectOnce(url, ns, sub, role) {
  return new Promise((resolve, reject) => {
    const s = connectSocket(url + ns, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      timeout: 30000,
      auth: { token: token(sub, role) },
      localAddress: nextLocalAddress(),
    });
    const onErr = (err) => {
      s.close();
      const e = new Error(`${role} ${sub} on ${url}${ns}: ${err && (err.message || JSON.stringify(err.data))}`);
      e.code = (err && err.data && err.data.code) || (err && err.message === "timeout" ? "TIMEOUT" : "CONNECT_ERROR");
      reject(e);
    };
    s.once("connect_error", onErr);
    s.once("connect", () => {
      s.off("connect_error", onErr);
      sockets.push(s);
      resolve(s);
    });
  });
}

async function pool(items, limit, fn, prime = 0) {
  // Bounded concurrency: the server's accept backlog is finite and a SYN retry costs a second.
  // The first `prime` items go one by one: each server's first socket opens its pub/sub link
  // before the crowd arrives (see docs/benchmarks.md, "first subscription race").
  for (let k = 0; k < Math.min(prime, items.length); k++) await fn(items[k], k);
  let i = Math.min(prime, items.length);
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (i < items.length) {
      const k = i++;
      await fn(items[k], k);
    }
  });
  await Promise.all(workers);
}

let subscribeRetries = 0;

async function subscribe(s, orderId) {
  // UNAVAILABLE and RATE_LIMITED say "retry shortly": do so a few times, counting it.
  for (let a = 1; ; a++) {
    try {
      return await subscribeOnce(s, orderId);
    } catch (e) {
      if (a >= 5 || !["UNAVAILABLE", "RATE_LIMITED", "TIMEOUT"].includes(e.code)) throw e;
      subscribeRetries++;
      await sleep(250 * a + Math.random() * 250);
    }
  }
}

function subscribeOnce(s, orderId) {
  return new Promise((resolve, reject) => {
    s.timeout(30000).emit("order:subscribe", { orderId }, (err, ack) => {
      if (err) return reject(Object.assign(new Error(`order:subscribe ${orderId}: no ack`), { code: "TIMEOUT" }));
      if (!ack || ack.ok !== true) {
        const e = new Error(`order:subscribe ${orderId}: ${JSON.stringify(ack)}`);
        e.code = ack && ack.error && ack.error.code;
        return reject(e);
      }
      resolve();
    });
  });
}

function cpuMs() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function rssKb(pids) {
  let total = 0;
  for (const pid of pids) {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    total += m ? Number(m[1]) : 0;
  }
  return total;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- latency recording ---------------------------------------------------------------------------
// {from, hist: Map<ms,count>, received, late, overMs, over: Map<100 ms window, count over overMs>,
//  gc: Map<100 ms window, GC ms> (K's collect only)}
let window = null;
// The generator's own garbage collections per 100 ms window (ms paused), while a collect window
// (K's) is open: a pause delays every receive time taken in it, so the report can tell the
// generator's tail from the server's.
const { PerformanceObserver, performance } = require("node:perf_hooks");
new PerformanceObserver((list) => {
  if (!window || !window.gc) return;
  for (const e of list.getEntries()) {
    const w = Math.floor((performance.timeOrigin + e.startTime + e.duration) / 100);
    window.gc.set(w, (window.gc.get(w) || 0) + e.duration);
  }
}).observe({ entryTypes: ["gc"] });
function record(sentAt) {
  if (!window) return;
  if (sentAt < window.from) {
    window.late++;
    return;
  }
  const now = Date.now();
  const lat = Math.max(0, now - sentAt);
  window.hist.set(lat, (window.hist.get(lat) || 0) + 1);
  window.received++;
  if (window.overMs !== undefined && lat > window.overMs) {
    const w = Math.floor(now / 100);
    window.over.set(w, (window.over.get(w) || 0) + 1);
  }
}
function histObj(h) {
  const o = {};
  for (const [k, v] of h) o[k] = v;
  return o;
}

// ---- scenario L / X: porters send location:update, customers and admins of each order receive ------
async function setupLocation() {
  const urls = cfg.urls;
  const subs = [];
  for (const [i, o] of cfg.orders.entries()) {
    // Place the three parties of an order on different instances when there are several.
    subs.push({ url: urls[i % urls.length], ns: "/client", sub: o.customerId, role: "customer", orderId: o.orderId });
    subs.push({ url: urls[(i + 1) % urls.length], ns: "/admin", sub: o.adminId, role: "admin", orderId: o.orderId });
  }
  await pool(
    subs,
    cfg.connectConcurrency || 100,
    async (x) => {
      const s = await connect(x.url, x.ns, x.sub, x.role);
      s.on("porter:location", (m) => record(m.timestamp));
      await subscribe(s, x.orderId);
    },
    cfg.prime === false ? 0 : urls.length,
  );
  const porters = new Array(cfg.orders.length);
  await pool(cfg.orders, cfg.connectConcurrency || 100, async (o, i) => {
    const p = await connect(urls[(i + 2) % urls.length], "/porter", o.porterId, "porter");
    // A refused update (rate limit, validation) comes back as an `error` event: count it, since
    // it explains loss that would otherwise look like a slow server.
    p.on("error", (e) => {
      if (window) window.errors[(e && e.code) || "unknown"] = (window.errors[(e && e.code) || "unknown"] || 0) + 1;
    });
    porters[i] = p;
  });
  return porters;
}

async function runStep(porters, cmd) {
  const perMsg = cfg.subscribersPerOrder || 2;
  const wait = cmd.startAt - Date.now();
  if (wait > 0) await sleep(wait);
  const start = Date.now();
  window = { from: start, hist: new Map(), received: 0, late: 0, errors: {} };
  const cpu0 = cpuMs();
  const durMs = cmd.seconds * 1000;
  let sent = 0;
  let rr = 0;
  let maxBehind = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const el = Date.now() - start;
      const target = Math.floor((cmd.rate * Math.min(el, durMs)) / 1000);
      maxBehind = Math.max(maxBehind, target - sent);
      const n = target - sent;
      for (let k = 0; k < n; k++) {
        const p = porters[rr++ % porters.length];
        const ts = Date.now();
        p.emit("location:update", {
          lat: 52.52 + (sent % 1000) * 1e-5,
          lng: 13.405 + (sent % 997) * 1e-5,
          heading: 90,
          speed: 8.5,
          accuracy: 5,
          timestamp: ts,
        });
        sent++;
      }
      if (el >= durMs) return resolve();
      setTimeout(tick, 2);
    };
    tick();
  });
  const sendEnd = Date.now();
  const cpuSend = cpuMs() - cpu0;
  const expected = sent * perMsg;
  const drainDeadline = sendEnd + cmd.drainMs;
  while (window.received < expected && Date.now() < drainDeadline) await sleep(5);
  const w = window;
  window = null;
  const cpu = cpuMs() - cpu0;
  return {
    type: "step",
    rate: cmd.rate,
    seconds: (sendEnd - start) / 1000,
    sent,
    expected,
    received: w.received,
    late: w.late,
    errors: w.errors,
    hist: histObj(w.hist),
    maxSendBacklog: maxBehind,
    cpuMs: cpu,
    cpuSendMs: cpuSend,
    wallMs: Date.now() - start,
  };
}

// ---- scenario C: many idle authenticated sockets -------------------------------------------------
async function runConnections() {
  const n = cfg.connections;
  const warm = Math.min(cfg.warmup || 200, Math.floor(n / 10));
  const users = Array.from({ length: n }, (_, i) => `${cfg.userPrefix || "c"}-${i}`);
  let errors = 0;
  const firstErrors = [];
  const one = async (u, k) => {
    const url = cfg.urls[k % cfg.urls.length];
    try {
      await connect(url, "/client", u, "customer");
    } catch (e) {
      errors++;
      if (firstErrors.length < 5) firstErrors.push(String(e.message));
    }
  };
  await pool(users.slice(0, warm), cfg.connectConcurrency || 100, one);
  await sleep(cfg.settleMs || 2000);
  const rss0 = rssKb(cfg.serverPids);
  const cpu0 = cpuMs();
  const t0 = Date.now();
  await pool(users.slice(warm), cfg.connectConcurrency || 100, (u, k) => one(u, k + warm));
  const connectSeconds = (Date.now() - t0) / 1000;
  const cpu = cpuMs() - cpu0;
  await sleep(cfg.settleMs || 2000);
  const rss1 = rssKb(cfg.serverPids);
  const connected = sockets.filter((s) => s.connected).length;
  return {
    type: "connections",
    requested: n,
    warmup: warm,
    connected,
    errors,
    firstErrors,
    connectSeconds,
    connectRate: (n - warm - errors) / connectSeconds,
    rssBeforeKb: rss0,
    rssAfterKb: rss1,
    bytesPerConnection: ((rss1 - rss0) * 1024) / Math.max(1, n - warm - errors),
    connectRetries,
    connectRefusals,
    cpuMs: cpu,
  };
}

// ---- scenario K: order:status events from Kafka to subscribed customers ----------------------------
async function setupStatus() {
  await pool(
    cfg.orders,
    cfg.connectConcurrency || 100,
    async (o, i) => {
      const s = await connect(cfg.urls[i % cfg.urls.length], "/client", o.customerId, "customer");
      s.on("order:status", (m) => {
        // occurredAt is when the producer built the event (ms epoch or an ISO-8601 string).
        const t = typeof m.occurredAt === "number" ? m.occurredAt : Date.parse(m.occurredAt);
        if (Number.isFinite(t)) record(t);
      });
      await subscribe(s, o.orderId);
    },
    cfg.prime === false ? 0 : cfg.urls.length,
  );
}

async function collect(cmd) {
  const start = Date.now();
  window = {
    from: cmd.from || 0,
    hist: new Map(),
    received: 0,
    late: 0,
    errors: {},
    overMs: cmd.overMs,
    over: new Map(),
    gc: new Map(),
  };
  out({ type: "collecting" });
  const cpu0 = cpuMs();
  while (Date.now() - start < cmd.timeoutMs) {
    if (cmd.expect && window.received >= cmd.expect) break;
    await sleep(10);
  }
  const w = window;
  window = null;
  return {
    type: "collect",
    expected: cmd.expect,
    received: w.received,
    hist: histObj(w.hist),
    overByWindow: histObj(w.over),
    gcByWindow: histObj(w.gc),
    cpuMs: cpuMs() - cpu0,
  };
}

async function main() {
  let porters = null;
  const t0 = Date.now();
  if (cfg.mode === "C") {
    // The sockets stay open until "quit", so the server can be inspected while they are held.
    out(await runConnections());
  } else {
    if (cfg.mode === "L") porters = await setupLocation();
    else if (cfg.mode === "K") await setupStatus();
    else throw new Error(`unknown mode ${cfg.mode}`);
    out({
      type: "ready",
      sockets: sockets.length,
      setupSeconds: (Date.now() - t0) / 1000,
      connectRetries,
      connectRefusals,
      subscribeRetries,
    });
  }

  const rl = readline.createInterface({ input: process.stdin });
  let queue = Promise.resolve();
  rl.on("line", (line) => {
    const cmd = JSON.parse(line);
    queue = queue.then(async () => {
      if (cmd.cmd === "step") out(await runStep(porters, cmd));
      else if (cmd.cmd === "collect") out(await collect(cmd));
      else if (cmd.cmd === "quit") {
        for (const s of sockets) s.close();
        out({ type: "bye" });
        process.exit(0);
      }
    });
  });
  rl.on("close", () => process.exit(0));
}

main().catch((e) => {
  out({ type: "error", message: String((e && e.stack) || e) });
  log(String((e && e.stack) || e));
  process.exit(1);
});
