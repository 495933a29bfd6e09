/* edge-hub console: fleet, device, alerts, commands, deployments. Live changes from /ui/feed. */
"use strict";
(() => {
  const { el, api, socket, can, coalesce } = C;
  const $ = (id) => document.getElementById(id);

  /* Call render now and again whenever the feed says one of `topics` changed. */
  async function live(topics, render) {
    const again = coalesce(() => render().catch((e) => C.toast(e.message, "bad")), 100);
    await render();
    socket("/ui/feed", (m) => { if (m.type === "changed" && m.what.some((w) => topics.includes(w))) again(); }, again);
  }

  const stateBadge = (online) => C.badge(online ? "online" : "offline", online ? "online" : "offline");
  const levelBadge = (level) => C.badge(level || "–", "level-" + level);

  /* What each device should run, by the deployments that reached it: {device: {model: version}}. */
  async function desired() {
    const { deployments: list } = await api("/v1/deployments");
    const out = {};
    const details = await Promise.all(list.slice(0, 20).reverse().map((d) => api(`/v1/deployments/${encodeURIComponent(d.id)}`)));
    for (const d of details) {
      if (!d.model) continue;
      for (const x of d.devices) if (x.status === "ok") (out[x.device] = out[x.device] || {})[d.model] = d.version;
    }
    return out;
  }

  function drift(device, wanted) {
    const have = {};
    for (const m of device.models || []) if (typeof m === "object" && m) have[m.name] = m.version;
    const off = Object.entries(wanted || {}).filter(([name, v]) => have[name] !== v).map(([name, v]) => `${name}: ${v} deployed, ${have[name] ? have[name] + " reported" : "not reported"}`);
    return off.length ? off.join("; ") : "in sync";
  }

  async function fleet() {
    await live(["devices", "messages", "deployments"], async () => {
      const [{ devices }, wanted] = await Promise.all([api("/v1/devices"), desired()]);
      const online = devices.filter((d) => d.online).length;
      $("fleet-count").textContent = `${devices.length} devices, ${online} online`;
      $("fleet-count").dataset.online = String(online);
      C.rows($("fleet").tBodies[0], devices, (d) => el("tr", { dataset: { device: d.device, online: d.online ? "1" : "0" } },
        el("th", { scope: "row" }, el("a", { href: `/ui/devices/${encodeURIComponent(d.device)}`, text: d.device })),
        el("td", {}, stateBadge(d.online)),
        el("td", { text: C.show(d.agent_version) }),
        el("td", { text: C.ago(d.last_seen), title: C.dateTime(d.last_seen) }),
        el("td", { text: Object.entries(d.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–" }),
        el("td", { text: (d.models || []).map((m) => (typeof m === "string" ? m : `${m.name}@${m.version}`)).join(", ") || "–" }),
        el("td", {}, (() => { const t = drift(d, wanted[d.device]); return C.badge(t, t === "in sync" ? "ok" : "bad"); })())));
    });
  }

  /* The device's recent telemetry messages as one chart (samples, or each window's mean). */
  function telemetryChart(holder) {
    let chart = null, keys = [];
    return (messages) => {
      const rows = messages.map((m) => m.body || {}).filter((b) => b.metrics).reverse();
      const flat = rows.map((b) => { const o = {}; for (const [k, v] of Object.entries(b.metrics)) o[k] = typeof v === "number" ? v : v && typeof v.mean === "number" ? v.mean : null; return [b.ts || b.end || b.start, o]; });
      const names = [...new Set(flat.flatMap(([, o]) => Object.keys(o)))].filter((k) => /percent|pct|temp|load/.test(k)).slice(0, 6);
      $("tel-note").textContent = rows.length ? `${rows.length} telemetry messages; ${names.join(", ")}` : "No telemetry received yet.";
      holder.dataset.points = String(rows.length);
      if (!names.length) return;
      const data = [flat.map(([t]) => t), ...names.map((k) => flat.map(([, o]) => o[k] ?? null))];
      if (!chart || names.join() !== keys.join()) {
        if (chart) chart.destroy();
        keys = names;
        const colors = ["#5ab0ff", "#7ee787", "#d2a8ff", "#ffa657", "#ff7b72", "#f2cc60"];
        chart = new uPlot({ width: Math.max(280, holder.clientWidth - 8), height: 200, scales: { x: { time: true } },
          series: [{}, ...names.map((k, i) => ({ label: k.replace(/_/g, " "), stroke: colors[i % colors.length], width: 1.5 }))],
          axes: [{ stroke: "#c9d1d9", grid: { stroke: "#30363d" } }, { stroke: "#c9d1d9", grid: { stroke: "#30363d" } }] }, data, holder);
        new ResizeObserver(() => chart.setSize({ width: Math.max(280, holder.clientWidth - 8), height: 200 })).observe(holder);
      } else chart.setData(data);
    };
  }

  async function device() {
    const name = $("device-page").dataset.device;
    document.querySelector("h1").textContent = `Device ${name}`;
    const telemetry = telemetryChart($("telemetry-chart"));
    await live(["devices", "alerts", "commands", "messages"], async () => {
      const d = await api(`/v1/devices/${encodeURIComponent(name)}`);
      C.kv($("dstate"), { state: d.online ? "online" : "offline", "agent version": d.agent_version, "last seen": C.dateTime(d.last_seen), "first seen": C.dateTime(d.first_seen), labels: d.labels, messages: d.messages });
      const tel = (d.last_telemetry && d.last_telemetry.body) || {};
      const flat = {};
      const body = tel.body || tel;
      if (body.ts || body.end) flat.time = C.dateTime(body.ts || body.end);
      for (const [k, v] of Object.entries(body.metrics || {})) flat[k.replace(/_/g, " ")] = typeof v === "number" ? v : v && v.mean !== undefined ? `${v.mean} (min ${v.min}, max ${v.max})` : v;
      if (!body.metrics) for (const [k, v] of Object.entries(body)) flat[k.replace(/_/g, " ")] = v;
      C.kv($("dtel"), Object.keys(flat).length ? flat : { telemetry: "none received yet" });
      telemetry((await api(`/v1/messages?device=${encodeURIComponent(name)}&kind=telemetry&limit=300`)).messages);
      C.rows($("dalerts").tBodies[0], d.recent_alerts || [], (a) => el("tr", {}, el("td", {}, levelBadge(a.level)), el("td", { text: a.title }), el("td", {}, C.badge(a.state, a.state)), el("td", { text: C.dateTime(a.ts) })));
      C.rows($("dcmds").tBodies[0], d.recent_commands || [], (c) => el("tr", {}, el("td", { text: c.name }), el("td", {}, C.badge(c.status, c.status)), el("td", { text: C.time(c.created_at) }), el("td", { text: C.time(c.result_at) }), el("td", { text: c.error || "" })));
    });
    if (!can("operator")) { document.querySelectorAll(".op-only").forEach((n) => n.remove()); return; }
    $("cmd-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const out = $("cmd-result");
      out.textContent = "sending…";
      try {
        const r = await api(`/v1/devices/${encodeURIComponent(name)}/commands`, { json: { name: $("cmd-name").value, wait_s: 10 } });
        out.textContent = JSON.stringify(r.command.result ?? r.command, null, 2);
        out.dataset.status = r.command.status;
      } catch (err) { out.textContent = err.message; out.dataset.status = "error"; }
    });
  }

  async function alerts() {
    const act = async (a, what, body) => {
      try {
        await api(`/v1/alerts/${encodeURIComponent(a.alert_id || a.id)}/${what}`, { json: { device: a.device, wait_s: 10, ...body } });
        C.toast(`${a.title}: ${what} sent to ${a.device}`, "ok");
      } catch (e) { C.toast(`${a.title}: ${e.message}`, "bad"); }
    };
    await live(["alerts", "messages"], async () => {
      const { alerts: list } = await api("/v1/alerts?limit=200");
      $("no-falerts").hidden = list.length > 0;
      C.rows($("falerts").tBodies[0], list, (a) => {
        const actions = el("td", {});
        if (can("operator") && a.acked_at === null) actions.append(el("button", { type: "button", class: "op", text: "Ack", "aria-label": `Acknowledge ${a.title} on ${a.device}`, onclick: () => act(a, "ack", {}) }));
        if (can("operator") && a.shelved === false) actions.append(" ", el("button", { type: "button", class: "op", text: "Shelve 1 h", "aria-label": `Shelve ${a.title} on ${a.device} for an hour`, onclick: () => act(a, "shelve", { for: "1h" }) }));
        const state = a.acked_at ? `acked by ${a.acked_by || "?"}` : a.shelved ? "shelved" : a.state;
        return el("tr", { dataset: { id: a.alert_id || a.id, state: a.state }, class: "level-" + a.level },
          el("td", {}, levelBadge(a.level)),
          el("td", {}, el("a", { href: `/ui/devices/${encodeURIComponent(a.device)}`, text: a.device })),
          el("td", { text: a.title, title: (a.body && a.body.hint) || "" }),
          el("td", {}, C.badge(state, a.acked_at ? "ok" : a.state)),
          el("td", { text: C.dateTime(a.opened_at || a.ts) }),
          actions);
      });
    });
  }

  async function commands() {
    const results = $("results").tBodies[0];
    const shown = new Map();
    const render = () => C.rows(results, [...shown.values()].reverse(), (c) => el("tr", { dataset: { device: c.device, status: c.status } },
      el("th", { scope: "row", text: c.device }), el("td", { text: c.name }), el("td", {}, C.badge(c.status, c.status === "ok" ? "ok" : c.status === "failed" ? "bad" : "")),
      el("td", { text: c.result_at && c.created_at ? `${Math.round((c.result_at - c.created_at) * 1000)} ms` : "–" }),
      el("td", { text: c.error || (c.result === undefined || c.result === null ? "" : JSON.stringify(c.result)) })));
    const refresh = async () => {
      for (const c of [...shown.values()].filter((x) => x.status === "sent")) {
        shown.set(c.id, await api(`/v1/commands/${encodeURIComponent(c.id)}`));
      }
      render();
    };
    await live(["commands"], refresh);
    if (!can("operator")) { document.querySelectorAll(".op-only").forEach((n) => n.remove()); return; }
    $("fleet-cmd").addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const r = await api("/v1/commands", { json: { name: $("fc-name").value, to: $("fc-to").value || "all" } });
        for (const c of r.commands) shown.set(c.id, c);
        for (const u of r.unsent) C.toast(`${u.device}: ${u.error}`, "bad");
        render();
        await refresh();
      } catch (err) { C.toast(err.message, "bad"); }
    });
  }

  async function deployments() {
    await live(["deployments"], async () => {
      const { deployments: list } = await api("/v1/deployments");
      $("no-deps").hidden = list.length > 0;
      const details = await Promise.all(list.slice(0, 10).map((d) => api(`/v1/deployments/${encodeURIComponent(d.id)}`)));
      C.rows($("deps").tBodies[0], details, (d) => {
        const total = d.devices.length;
        const done = d.devices.filter((x) => x.status !== "pending").length;
        return el("tr", { dataset: { id: d.id, status: d.status } },
          el("th", { scope: "row", text: `${d.model || "?"} ${d.version || ""}` }),
          el("td", { text: Object.entries(d.selector || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "all" }),
          el("td", { text: `${d.canary_percent} %` }),
          el("td", {}, C.badge(d.status, d.status === "succeeded" || d.status === "done" ? "ok" : d.status === "running" ? "" : "bad")),
          el("td", {}, el("progress", { max: String(total || 1), value: String(done), "aria-label": `${done} of ${total} devices answered` }), ` ${done}/${total} · ` + Object.entries(d.summary || {}).map(([k, v]) => `${k} ${v}`).join(", ")),
          el("td", { text: C.dateTime(d.created_at) }));
      });
      const latest = details[0];
      if (!latest) return;
      $("dep-title").textContent = `${latest.model || "?"} ${latest.version || ""}: ${latest.status}${latest.detail ? " — " + latest.detail : ""}`;
      $("dep-title").dataset.status = latest.status;
      C.rows($("dep-devices").tBodies[0], latest.devices, (x) => el("tr", { dataset: { device: x.device, phase: x.phase, status: x.status } },
        el("th", { scope: "row", text: x.device }), el("td", { text: x.phase }), el("td", {}, C.badge(x.status, x.status === "ok" ? "ok" : x.status === "pending" ? "" : "bad")),
        el("td", { text: C.time(x.updated_at) }), el("td", { text: x.error || "" })));
    });
  }

  async function keys() {
    const k = await api("/v1/keys");
    C.kv($("key"), { "key id": k.key_id, "public key": k.public_key, previous: k.previous ? `${k.previous.key_id} (${k.previous.public_key})` : "none" });
    if (!can("admin")) { $("tokens-note").textContent = "Operator tokens are listed for admin tokens only."; $("tokens").hidden = true; return; }
    const { tokens } = await api("/v1/tokens?all=true");
    $("tokens-note").textContent = `${tokens.length} tokens. Create and revoke them with edge-hub tokens create|revoke.`;
    C.rows($("tokens").tBodies[0], tokens, (t) => el("tr", {}, el("th", { scope: "row", text: t.name }), el("td", { text: t.role }),
      el("td", { text: C.dateTime(t.created_at) }), el("td", { text: t.expires_at ? C.dateTime(t.expires_at) : "never" }),
      el("td", {}, C.badge(t.revoked_at ? "revoked" : "active", t.revoked_at ? "bad" : "ok"))));
  }

  const pages = { fleet, device, alerts, commands, deployments, keys };
  const page = pages[document.body.dataset.page];
  if (page) page().then(() => { document.body.dataset.ready = "1"; }).catch((e) => { C.toast(e.message, "bad"); document.body.dataset.ready = "error"; });
})();
