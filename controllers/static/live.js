// Live updates: one WebSocket to /api/ws (token as ?token=, since browsers cannot set headers
// on a websocket). While it is down, the current page polls every 500 ms; the socket
// reconnects with a growing delay (1 s .. 10 s).

import { session } from "./api.js";

const POLL_MS = 500;

class Live {
  constructor() {
    this.ws = null;
    this.connected = false;
    this.handlers = new Set();
    this.poller = null; // the current page's reload function
    this.pollTimer = null;
    this.retryMs = 1000;
    this.reconnectTimer = null;
    this.stopped = true;
    this.framesReceived = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    if (this.ws) this.ws.close();
    this.ws = null;
    this.setConnected(false);
  }

  connect() {
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const token = session.token ? `?token=${encodeURIComponent(session.token)}` : "";
    const ws = new WebSocket(`${scheme}://${location.host}/api/ws${token}`);
    this.ws = ws;
    ws.onopen = () => {
      this.retryMs = 1000;
      this.setConnected(true);
    };
    ws.onmessage = (e) => this.dispatch(JSON.parse(e.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.setConnected(false);
      if (this.stopped) return;
      this.reconnectTimer = setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(10000, this.retryMs * 2);
    };
  }

  setConnected(value) {
    this.connected = value;
    const badge = document.getElementById("live-state");
    if (badge) {
      badge.textContent = value ? "live" : this.stopped ? "offline" : "polling";
      badge.dataset.state = value ? "live" : "polling";
    }
    this.schedulePolling();
    // Something may have changed while the socket was down: reload once on (re)connect.
    if (value && this.poller) this.poller();
  }

  dispatch(frame) {
    this.framesReceived += 1;
    if (frame.type === "resync") {
      if (this.poller) this.poller();
      return;
    }
    if (frame.type !== "tasks") return;
    for (const handler of this.handlers) handler(frame.events);
  }

  /** Listen to task events while a page is shown; returns the unsubscribe function. */
  subscribe(handler) {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  /** The page's reload function, called every 500 ms while the socket is down. */
  setPoller(fn) {
    this.poller = fn;
    this.schedulePolling();
  }

  schedulePolling() {
    clearInterval(this.pollTimer);
    this.pollTimer = null;
    if (!this.connected && this.poller && !this.stopped) {
      this.pollTimer = setInterval(() => this.poller && this.poller(), POLL_MS);
    }
  }
}

export const live = new Live();
