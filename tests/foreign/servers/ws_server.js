// A foreign peer for the bgws suite: Node's `ws` (v8) server, run as a subprocess.
//
// Listens on 127.0.0.1 on a free port and prints the port on stdout. The path picks the
// behaviour, the same for every foreign server (see tests/foreign/conftest.py).
"use strict";

const { WebSocketServer } = require("ws");

const SUBPROTOCOLS = new Set(["chat.v2"]);
const GOOD_TOKEN = "Bearer good";
const PONG_WAIT_MS = 5000;
const FRAGMENTS = 3;

// session name -> { ids: ids seen, connections: connections so far }
const sessions = new Map();

function split(payload, parts) {
  // Fixed byte offsets, even inside a UTF-8 character.
  const step = Math.ceil(payload.length / parts);
  const pieces = [];
  for (let i = 0; i < payload.length; i += step) pieces.push(payload.subarray(i, i + step));
  return pieces;
}

function fragmentPayloads() {
  const text = JSON.stringify({ type: "fragmented", text: "ünïcödé ✓ ".repeat(40) });
  const binary = Buffer.alloc(1024);
  for (let i = 0; i < binary.length; i++) binary[i] = i % 256;
  return [Buffer.from(text, "utf8"), binary];
}

function echo(ws) {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
}

function ping(ws, count) {
  const pongs = [];
  const timer = setTimeout(() => ws.terminate(), PONG_WAIT_MS);
  ws.on("pong", (data) => {
    pongs.push(data.toString("utf8"));
    if (pongs.length === count) {
      clearTimeout(timer);
      ws.send(JSON.stringify({ type: "pongs", payloads: pongs }));
    }
  });
  for (let n = 0; n < count; n++) ws.ping(Buffer.from(`p${n}`));
  echo(ws);
}

function fragment(ws) {
  const [text, binary] = fragmentPayloads();
  for (const [payload, isBinary] of [[text, false], [binary, true]]) {
    const pieces = split(payload, FRAGMENTS);
    pieces.forEach((piece, n) => {
      ws.send(piece, { binary: isBinary, fin: n === pieces.length - 1 });
    });
  }
  echo(ws);
}

function ack(ws, url) {
  const name = url.searchParams.get("session");
  const closeAfter = Number(url.searchParams.get("close_after") || "0");
  if (!sessions.has(name)) sessions.set(name, { ids: [], connections: 0 });
  const session = sessions.get(name);
  session.connections += 1;
  const first = session.connections === 1;
  let received = 0;
  ws.on("message", (raw) => {
    const data = JSON.parse(raw.toString("utf8"));
    if (data.type === "report") {
      ws.send(JSON.stringify({ type: "report", ids: session.ids }));
    } else {
      session.ids.push(data.id);
      received += 1;
      if (first && received === closeAfter) {
        ws.close(1012, "restarting");
        return;
      }
    }
    ws.send(JSON.stringify({ type: "ack", id: data.id }));
  });
}

const server = new WebSocketServer({
  host: "127.0.0.1",
  port: 0,
  handleProtocols: (offered, request) => {
    if (!request.url.startsWith("/subprotocol")) return false;
    for (const protocol of offered) if (SUBPROTOCOLS.has(protocol)) return protocol;
    return false;
  },
  verifyClient: (info, done) => {
    const path = new URL(info.req.url, "http://127.0.0.1").pathname;
    if (path === "/auth" && info.req.headers.authorization !== GOOD_TOKEN) {
      done(false, 401, "Unauthorized");
    } else {
      done(true);
    }
  },
});

server.on("connection", (ws, request) => {
  const url = new URL(request.url, "http://127.0.0.1");
  switch (url.pathname) {
    case "/echo":
      echo(ws);
      break;
    case "/ping":
      ping(ws, Number(url.searchParams.get("n") || "1"));
      break;
    case "/fragment":
      fragment(ws);
      break;
    case "/close":
      ws.close(Number(url.searchParams.get("code")), url.searchParams.get("reason") || "");
      break;
    case "/subprotocol": {
      const offered = (request.headers["sec-websocket-protocol"] || "").split(",");
      const hello = { type: "hello", subprotocol: ws.protocol, offered: offered.map((p) => p.trim()) };
      ws.send(JSON.stringify(hello));
      echo(ws);
      break;
    }
    case "/auth":
      ws.send(JSON.stringify({ type: "welcome" }));
      echo(ws);
      break;
    case "/ack":
      ack(ws, url);
      break;
    default:
      ws.close(1008, "unknown path");
  }
});

server.on("listening", () => {
  process.stdout.write(`${server.address().port}\n`);
});
