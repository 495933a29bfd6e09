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

  async function fleet() {
    await live(["devices", "messages"], async () => {
      const { devices } = await api("/v1/devices");
      const online = devices.filter((d) => d.online).length;
      $("fleet-count").textContent = `${devices.length} devices, ${online} online`;
      $("fleet-count").dataset.online = String(online);
      C.rows($("fleet").tBodies[0], devices, (d) => el("tr", { dataset: { device: d.device, online: d.online ? "1" : "0" } },
        el("th", { scope: "row" }, el("a", { href: `/ui/devices/${encodeURIComponent(d.device)}`, text: d.device })),
        el("td", {}, stateBadge(d.online)),
        el("td", { text: C.show(d.agent_version) }),
        el("td", { text: C.ago(d.last_seen), title: C.dateTime(d.last_seen) }),
        el("td", { text: Object.entries(d.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–" }),
        el("td", { text: (d.models || []).map((m) => (typeof m === "string" ? m : `${m.name}@${m.version}`)).join(", ") || "–" })));
    });
  }

  async function device() {
    const name = $("device-page").dataset.device;
    document.querySelector("h1").textContent = `Device ${name}`;
    await live(["devices", "alerts", "commands", "messages"], async () => {
      const d = await api(`/v1/devices/${encodeURIComponent(name)}`);
      C.kv($("dstate"), { state: d.online ? "online" : "offline", "agent version": d.agent_version, "last seen": C.dateTime(d.last_seen), "first seen": C.dateTime(d.first_seen), labels: d.labels, messages: d.messages });
      const tel = (d.last_telemetry && d.last_telemetry.body) || {};
      const flat = {};
      for (const [k, v] of Object.entries(tel.body || tel)) flat[k.replace(/_/g, " ")] = v;
      C.kv($("dtel"), Object.keys(flat).length ? flat : { telemetry: "none received yet" });
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

  const pages = { fleet, device, alerts, commands, deployments };
  const page = pages[document.body.dataset.page];
  if (page) page().then(() => { document.body.dataset.ready = "1"; }).catch((e) => { C.toast(e.message, "bad"); document.body.dataset.ready = "error"; });
})();
