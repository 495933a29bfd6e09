/* edge-agent console: shared helpers (DOM, JSON API, live WebSocket feeds). No token ever
   reaches this script: the browser's HttpOnly session cookie goes with each same-origin call. */
"use strict";
const C = (() => {
  const role = document.body.dataset.role || "viewer";
  const rank = { viewer: 0, operator: 1, admin: 2 };
  const can = (r) => (rank[role] ?? 0) >= rank[r];
  const LEVEL_COLORS = { warning: "#e6c229", minor: "#f08c2e", major: "#e8553d", critical: "#ff3df2" };

  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }

  async function api(path, opts = {}) {
    const init = { credentials: "same-origin", method: opts.method || "GET", headers: { Accept: "application/json" } };
    if (opts.json !== undefined) {
      init.method = opts.method || "POST";
      init.body = JSON.stringify(opts.json);
      init.headers["Content-Type"] = "application/json";
    }
    const resp = await fetch(path, init);
    const text = await resp.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
    if (resp.status === 401 && !opts.quiet401) {
      location.assign("/login?next=" + encodeURIComponent(location.pathname));
    }
    if (!resp.ok) {
      const err = new Error((body && body.error && body.error.message) || `${resp.status} ${resp.statusText}`);
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  const live = document.getElementById("live");
  const sockets = new Set();
  function showLive() {
    if (!live) return;
    const states = [...sockets].map((s) => s.state);
    const ok = states.length && states.every((s) => s === "live");
    live.textContent = !states.length ? "" : ok ? "live" : "reconnecting…";
    live.className = "live " + (ok ? "ok" : "down");
  }

  /* A WebSocket that reconnects with back-off; onMessage(obj) gets each JSON message. */
  function socket(path, onMessage, onOpen) {
    const entry = { state: "connecting", ws: null };
    sockets.add(entry);
    let delay = 500;
    const connect = () => {
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
      const ws = new WebSocket(url);
      entry.ws = ws;
      ws.onopen = () => { entry.state = "live"; delay = 500; showLive(); if (onOpen) onOpen(); };
      ws.onmessage = (m) => { try { onMessage(JSON.parse(m.data)); } catch (e) { console.error(e); } };
      ws.onclose = () => {
        entry.state = "down"; showLive();
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      };
    };
    connect();
    showLive();
    return entry;
  }

  function toast(message, kind) {
    const box = document.getElementById("toasts") || document.body.appendChild(el("div", { id: "toasts", role: "status", "aria-live": "polite" }));
    const t = box.appendChild(el("p", { class: "toast " + (kind || "") , text: message }));
    setTimeout(() => t.remove(), 5000);
  }

  /* Run fn at most once per animation frame, however often it is asked for. */
  function coalesce(fn, ms) {
    let pending = false;
    return () => {
      if (pending) return;
      pending = true;
      const run = () => { pending = false; fn(); };
      if (ms) setTimeout(run, ms); else requestAnimationFrame(run);
    };
  }

  const time = (ts) => (ts ? new Date(ts * 1000).toLocaleTimeString([], { hour12: false }) : "–");
  const dateTime = (ts) => (ts ? new Date(ts * 1000).toLocaleString([], { hour12: false }) : "–");
  const ago = (ts) => {
    if (!ts) return "never";
    const s = Math.max(0, Date.now() / 1000 - ts);
    return s < 60 ? `${Math.round(s)} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
  };
  const bytes = (n) => {
    if (n === null || n === undefined) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
  };
  const show = (v) => (v === null || v === undefined || v === "" ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v));

  function kv(dl, obj) {
    dl.replaceChildren(...Object.entries(obj).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: show(v) })]));
  }

  function rows(tbody, list, render) {
    tbody.replaceChildren(...list.map(render));
  }

  function bar(node, used, total, text) {
    const pct = total ? Math.min(100, (100 * used) / total) : 0;
    node.querySelector("span").style.width = pct.toFixed(1) + "%";
    node.setAttribute("aria-valuenow", pct.toFixed(0));
    node.classList.toggle("high", pct > 85);
    if (text) text.textContent = total ? `${bytes(used)} of ${bytes(total)} (${pct.toFixed(0)} %)` : `${bytes(used)} in use, no budget set`;
  }

  function badge(text, cls) { return el("span", { class: "badge " + (cls || text), text }); }

  return { role, can, el, api, socket, toast, coalesce, time, dateTime, ago, bytes, show, kv, rows, bar, badge, LEVEL_COLORS };
})();
