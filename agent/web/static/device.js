/* edge-agent console: the box's pages. Data from the JSON API; live changes from /v1/events. */
"use strict";
(() => {
  const { el, api, socket, can, coalesce } = C;
  const $ = (id) => document.getElementById(id);
  const ALERT_TYPES = "alert.opened,alert.escalated,alert.cleared,alert.acked";

  /* ------------------------------------------------------------------ overview */
  async function overview() {
    const render = async () => {
      const info = await api("/v1/info");
      C.rows($("services").tBodies[0], info.services || [], (s) =>
        el("tr", {}, el("th", { scope: "row", text: s.name }), el("td", {}, C.badge(s.state, s.state === "running" ? "ok" : "bad")), el("td", { text: C.show(s.restarts) })));
      const mqtt = info.mqtt || {};
      C.kv($("hub"), {
        "hub configured": mqtt.configured ? "yes" : "no",
        connected: mqtt.connected ? "connected" : "not connected",
        "hub URL": mqtt.hub_url || "–",
        "outbox depth": mqtt.outbox_messages === undefined ? "–" : `${mqtt.outbox_messages} messages`,
      });
      $("hub").dataset.outbox = String(mqtt.outbox_messages ?? "");
      const hw = info.hardware || {};
      const hardware = {};
      for (const [k, v] of Object.entries(hw)) hardware[k.replace(/_/g, " ")] = v;
      try {
        const th = (await api("/v1/hardware")).thermal || {};
        const temps = (th.zones || []).filter((z) => z.temp_c !== null && z.temp_c !== undefined);
        hardware.temperature = temps.length ? temps.map((z) => `${z.type} ${z.temp_c.toFixed(0)} °C`).join(", ") : "no thermal zones";
        const fw = th.firmware;
        hardware.throttling = fw ? (Object.entries(fw).filter(([k, v]) => v === true).map(([k]) => k.replace(/_/g, " ")).join(", ") || "none") : "not reported";
      } catch (e) { hardware.temperature = e.message; }
      C.kv($("hardware"), hardware);
      C.kv($("device"), { "device id": info.device_id, version: info.version, uptime: `${Math.round(info.uptime_s)} s`, config: info.config_source, "schema version": info.schema_version });
      try {
        const m = await api("/v1/models");
        C.bar($("membar"), m.memory_used_bytes || 0, m.memory_budget_bytes || 0, $("memtext"));
      } catch (e) { $("memtext").textContent = `model manager: ${e.message}`; }
    };
    const again = coalesce(() => render().catch((e) => C.toast(e.message, "bad")), 250);
    await render();
    socket("/v1/events?types=service.state,daemon.state," + ALERT_TYPES, again);
  }

  /* ------------------------------------------------------------------ sensors */
  const COLORS = ["#5ab0ff", "#7ee787", "#d2a8ff", "#ffa657", "#79c0ff", "#ff7b72", "#a5d6ff", "#f2cc60"];

  function makeChart(machine, holder) {
    const channels = machine.channels;
    const data = [[], ...channels.map(() => []), []];
    const levels = machine.levels || [];
    const alerts = new Map();
    const bandsDrawn = { n: 0 };
    const draw = (u) => {
      const ctx = u.ctx;
      const { left, top, width, height } = u.bbox;
      ctx.save();
      ctx.beginPath(); ctx.rect(left, top, width, height); ctx.clip();
      let n = 0;
      const now = data[0].length ? data[0][data[0].length - 1] : Date.now() / 1000;
      for (const a of alerts.values()) {
        const x0 = u.valToPos(a.start, "x", true);
        const x1 = u.valToPos(a.end || now, "x", true);
        ctx.fillStyle = (C.LEVEL_COLORS[a.level] || "#888") + "44";
        ctx.fillRect(Math.max(left, x0), top, Math.max(2, Math.min(left + width, x1) - Math.max(left, x0)), height);
        n++;
      }
      for (const lv of levels) {
        const y = u.valToPos(lv.threshold, "score", true);
        if (y < top || y > top + height) continue;
        ctx.strokeStyle = C.LEVEL_COLORS[lv.level] || "#888";
        ctx.setLineDash([6, 4]); ctx.lineWidth = 1;
        ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + width, y); ctx.stroke();
      }
      ctx.restore();
      bandsDrawn.n = n;
      holder.dataset.bands = String(n);
      if (n && !holder.dataset.firstBandAt) holder.dataset.firstBandAt = String(Date.now());  // wall-clock ms
    };
    const top = levels.length ? levels[Math.min(1, levels.length - 1)].threshold : 1;
    const opts = {
      width: Math.max(280, holder.clientWidth - 8),
      height: window.innerWidth < 600 ? 200 : 260,
      legend: { live: false },
      scales: { x: { time: true }, score: { range: (u, lo, hi) => [0, Math.max(hi || 0, top * 1.25)] } },
      series: [
        {},
        ...channels.map((c, i) => ({ label: c, stroke: COLORS[i % COLORS.length], width: 1.5, scale: "y" })),
        { label: "anomaly score", stroke: "#ffffff", width: 2, scale: "score" },
      ],
      axes: [
        { stroke: "#c9d1d9", grid: { stroke: "#30363d" }, ticks: { stroke: "#30363d" } },
        { scale: "y", stroke: "#c9d1d9", grid: { stroke: "#30363d" }, ticks: { stroke: "#30363d" } },
        { scale: "score", side: 1, stroke: "#ffffff", grid: { show: false }, label: "score" },
      ],
      hooks: { draw: [draw] },
    };
    let windowS = 300;
    const chart = new uPlot(opts, data, holder);
    new ResizeObserver(() => chart.setSize({ width: Math.max(280, holder.clientWidth - 8), height: opts.height })).observe(holder);
    const redraw = coalesce(() => chart.setData(data));
    return {
      alerts,
      push(ev) {
        data[0].push(ev.reading_ts);
        channels.forEach((c, i) => data[i + 1].push(ev.values[c] ?? null));
        data[channels.length + 1].push(ev.score);
        const cutoff = ev.reading_ts - windowS;
        while (data[0].length && data[0][0] < cutoff) data.forEach((s) => s.shift());
        holder.dataset.points = String(data[0].length);
        holder.dataset.score = String(ev.score);
        redraw();
      },
      alert(a) { alerts.set(a.id, a); redraw(); chart.redraw(false); },
      /* stored samples (averaged buckets) before the live ones; the score is live-only */
      history(h, seconds) {
        windowS = seconds;
        const live = data[0].length ? data[0][0] : Infinity;
        const keep = h.ts.map((t, i) => (t < live ? i : -1)).filter((i) => i >= 0);
        const head = [keep.map((i) => h.ts[i]), ...channels.map((c) => keep.map((i) => (h.values[c] || [])[i] ?? null)), keep.map(() => null)];
        for (let s = 0; s < data.length; s++) data[s] = head[s].concat(data[s]);
        const cutoff = (data[0].length ? data[0][data[0].length - 1] : Date.now() / 1000) - seconds;
        while (data[0].length && data[0][0] < cutoff) data.forEach((x) => x.shift());
        holder.dataset.points = String(data[0].length);
        holder.dataset.history = String(h.ts.length);  // buckets the store returned for this range
        chart.setData(data);
      },
    };
  }

  const firstShown = new Map();  // alert id -> when the page first showed it (wall-clock ms)

  function alertRow(a, onAck, onShelve) {
    const acked = !!a.acked_at;
    const shelved = a.shelved_until && a.shelved_until > Date.now() / 1000;
    const actions = el("td", {});
    if (can("operator") && !acked) {
      actions.append(el("button", { type: "button", class: "op", "aria-label": `Acknowledge ${a.title}`, onclick: () => onAck(a), text: "Ack" }));
    }
    if (can("operator")) {
      actions.append(" ", shelved
        ? el("button", { type: "button", class: "op", "aria-label": `Unshelve ${a.title}`, onclick: () => onShelve(a, 0), text: "Unshelve" })
        : el("button", { type: "button", class: "op", "aria-label": `Shelve ${a.title} for an hour`, onclick: () => onShelve(a, 3600), text: "Shelve 1 h" }));
    }
    const state = shelved ? `shelved to ${C.time(a.shelved_until)}` : acked ? `acked by ${a.acked_by || "?"}` : a.state;
    if (!firstShown.has(a.id)) firstShown.set(a.id, Date.now());
    return el("tr", { dataset: { id: a.id, level: a.level, state: a.state, shownAt: firstShown.get(a.id) }, class: "level-" + a.level },
      el("td", {}, C.badge(a.level, "level-" + a.level)),
      el("td", { text: a.machine }),
      el("td", { text: a.title, title: a.hint || "" }),
      el("td", { text: (a.channels || []).map((c) => (typeof c === "string" ? c : c.channel)).join(", ") || "–" }),
      el("td", { text: C.time(a.opened_at) }),
      el("td", {}, C.badge(state, acked || shelved ? "ok" : a.state)),
      actions);
  }

  async function sensors() {
    const { machines, running } = await api("/ui/machines");
    const charts = new Map();
    const holder = $("machines");
    if (!running) holder.append(el("p", { class: "muted", text: "The sensor pipeline is not running on this box (sensors.enabled)." }));
    for (const m of machines) {
      const chartBox = el("div", { class: "chart", id: "chart-" + m.machine, role: "img", "aria-label": `live readings and anomaly score of ${m.machine}` });
      holder.append(el("section", { class: "card wide", "aria-labelledby": "h-" + m.machine },
        el("h2", { id: "h-" + m.machine, text: m.machine }),
        el("p", { class: "muted", text: `channels: ${m.channels.join(", ")} · score thresholds: ${m.levels.map((l) => `${l.level} ${l.threshold}`).join(", ")} (calibrated: 1 = warning)` }),
        chartBox));
      charts.set(m.machine, makeChart(m, chartBox));
    }
    const open = new Map();
    const table = $("alerts").tBodies[0];
    const ack = async (a) => {
      try {
        const done = await api(`/v1/alerts/${encodeURIComponent(a.id)}/ack`, { json: { by: document.getElementById("who-name").textContent } });
        seen(done);
        C.toast(`Acknowledged: ${a.title}`, "ok");
      } catch (e) { C.toast(`Not acknowledged: ${e.message}`, "bad"); }
    };
    const shelve = async (a, seconds) => {
      try {
        seen(await api(`/ui/alerts/${encodeURIComponent(a.id)}/shelve`, { json: { for_s: seconds } }));
        C.toast(seconds ? `Shelved for an hour: ${a.title}` : `Unshelved: ${a.title}`, "ok");
      } catch (e) { C.toast(`Not shelved: ${e.message}`, "bad"); }
    };
    const render = coalesce(() => {
      const list = [...open.values()].sort((x, y) => (y.opened_at || 0) - (x.opened_at || 0));
      C.rows(table, list, (a) => alertRow(a, ack, shelve));
      $("no-alerts").hidden = list.length > 0;
    });
    const seen = (a) => {
      if (a.state === "cleared" && a.acked_at) open.delete(a.id); else open.set(a.id, a);
      const chart = charts.get(a.machine);
      if (chart) chart.alert(a);
      render();
    };
    const load = async () => {
      const [openList, recent] = await Promise.all([api("/v1/alerts?state=open&limit=200"), api("/v1/alerts?state=all&limit=50")]);
      for (const a of recent.alerts) { const c = charts.get(a.machine); if (c) c.alert(a); }
      open.clear();
      for (const a of openList.alerts) seen(a);
      for (const a of recent.alerts) if (!a.acked_at && a.state === "cleared") seen(a);
      render();
    };
    await load();
    const range = async (seconds) => {
      for (const b of document.querySelectorAll(".range button")) b.setAttribute("aria-pressed", String(b.dataset.window === String(seconds)));
      await Promise.all([...charts.entries()].map(async ([name, c]) => {
        try { c.history(await api(`/ui/history?machine=${encodeURIComponent(name)}&window=${seconds}`), seconds); }
        catch (e) { C.toast(`${name}: ${e.message}`, "bad"); }
      }));
    };
    for (const b of document.querySelectorAll(".range button")) b.addEventListener("click", () => range(Number(b.dataset.window)));
    await range(300);
    socket("/v1/events?types=sensor.reading," + ALERT_TYPES + "&queue=1024", (ev) => {
      if (ev.type === "sensor.reading") { const c = charts.get(ev.machine); if (c) c.push(ev); }
      else if (ev.alert) seen(ev.alert);
    }, () => load().catch(() => {}));
  }

  /* ------------------------------------------------------------------ voice */
  async function voice() {
    try {
      const st = await api("/v1/voice/status");
      const problems = Object.entries(st.problems || {});
      C.kv($("vstatus"), {
        state: st.state,
        "wake words": (st.wake_words || []).join(", ") || "–",
        "end of speech": st.end_of_speech_ms === undefined ? "–" : `${st.end_of_speech_ms} ms of silence`,
        loaded: Object.entries(st.loaded || {}).map(([k, v]) => `${k} (${Number(v).toFixed(1)} s)`).join(", ") || "none",
        installed: (st.models || []).filter((m) => m.installed).map((m) => `${m.task}: ${m.name}`).join(", ") || "none",
        microphone: st.source || "none (browser push-to-talk only)",
        speaker: st.sink || "none",
        problems: problems.length ? problems.map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join("; ") : "none",
      });
    } catch (e) { C.kv($("vstatus"), { voice: e.message }); }
    const turns = $("turns").tBodies[0];
    let cur = null;
    const row = () => {
      if (!cur) { cur = { transcript: "", answer: "", spans: null }; cur.tr = el("tr"); turns.prepend(cur.tr); }
      const spans = cur.spans ? Object.entries(cur.spans).map(([k, v]) => `${k} ${Math.round(v)}`).join(" · ") : "…";
      cur.tr.replaceChildren(el("td", { text: C.show(cur.turn) }), el("td", { class: "transcript", text: cur.transcript || "…" }), el("td", { class: "answer", text: cur.answer || "…" }), el("td", { class: "spans", text: spans }));
      while (turns.rows.length > 50) turns.deleteRow(-1);
    };
    const level = $("level");
    socket("/v1/events?types=voice.level,voice.state,voice.asr.transcript,voice.reply.token,voice.reply,voice.timings,voice.error", (ev) => {
      if (ev.type === "voice.level") {
        const pct = Math.max(0, Math.min(100, ((ev.rms_dbfs + 90) / 90) * 100));
        level.querySelector("span").style.width = pct.toFixed(0) + "%";
        level.setAttribute("aria-valuenow", Math.round(ev.rms_dbfs));
        $("level-text").textContent = `${ev.rms_dbfs.toFixed(0)} dBFS`;
      } else if (ev.type === "voice.state") $("vstate").textContent = ev.state;
      else if (ev.type === "voice.asr.transcript") { row(); cur.transcript = ev.text; row(); }
      else if (ev.type === "voice.reply.token") { row(); cur.answer = (cur.answer || "") + ev.text; row(); }
      else if (ev.type === "voice.reply") { row(); cur.answer = ev.text; row(); }
      else if (ev.type === "voice.timings") { row(); cur.turn = ev.turn; cur.spans = ev.spans_ms; row(); cur = null; }
      else if (ev.type === "voice.error") C.toast(ev.message, "bad");
    });
    const histograms = coalesce(() => latency().catch(() => {}), 2500);  // after the recorder's 2 s batch
    await latency();
    socket("/v1/events?types=voice.timings", histograms);
    if (!can("operator")) { for (const n of document.querySelectorAll(".op-only")) n.remove(); return; }
    pushToTalk($("ptt"), $("ptt-status"));
  }

  /* Per-stage latency histograms of the recent turns (the report recorder's table). */
  async function latency() {
    const { turns, stages } = await api("/ui/voice/latency");
    const names = { asr_ms: "speech end → transcript", reply_ms: "transcript → first token", first_audio_ms: "speech end → first audio" };
    const box = $("latency");
    box.dataset.turns = String(turns);
    if (!turns) { box.replaceChildren(el("p", { class: "muted", text: "No turns recorded yet." })); return; }
    box.replaceChildren(...Object.entries(stages).map(([k, xs]) => {
      const sorted = [...xs].sort((a, b) => a - b);
      const q = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : 0);
      const hi = q(0.99) || 1, bins = new Array(12).fill(0);
      for (const x of xs) bins[Math.min(11, Math.floor((x / hi) * 12))]++;
      const top = Math.max(1, ...bins);
      const bars = el("div", { class: "hist", role: "img", "aria-label": `${names[k] || k}: median ${Math.round(q(0.5))} ms, 90th percentile ${Math.round(q(0.9))} ms over ${xs.length} turns` },
        ...bins.map((n) => { const b = el("span"); b.style.height = `${(100 * n) / top}%`; return b; }));
      return el("div", { class: "histrow" }, el("b", { text: names[k] || k }), bars,
        el("span", { class: "muted", text: `median ${Math.round(q(0.5))} ms · p90 ${Math.round(q(0.9))} ms · 0–${Math.round(hi)} ms · ${xs.length} turns` }));
    }));
  }

  /* Hold the button: the microphone streams to /v1/voice/ws (listen mode); the reply is played. */
  function pushToTalk(button, status) {
    let ws = null, ctx = null, src = null, proc = null, stream = null, play = null, playAt = 0;
    const stop = () => {
      button.setAttribute("aria-pressed", "false");
      if (proc) { proc.disconnect(); proc = null; }
      if (src) { src.disconnect(); src = null; }
      if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
      if (ws && ws.readyState === 1) ws.send(JSON.stringify({ type: "audio-stop" }));
      status.textContent = "thinking…";
    };
    const start = async () => {
      if (proc) return;
      button.setAttribute("aria-pressed", "true");
      status.textContent = "listening…";
      ctx = ctx || new AudioContext();
      stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
      const proto = location.protocol === "https:" ? "wss://" : "ws://";
      if (!ws || ws.readyState > 1) {
        ws = new WebSocket(`${proto}${location.host}/v1/voice/ws?mode=listen&rate=${ctx.sampleRate}`);
        ws.binaryType = "arraybuffer";
        ws.onmessage = (m) => {
          if (typeof m.data !== "string") { playPcm(m.data); return; }
          const ev = JSON.parse(m.data);
          if (ev.type === "audio-start") { play = ev.rate || 22050; playAt = 0; }
          if (ev.type === "voice.reply") status.textContent = "";
          if (ev.type === "voice.error") status.textContent = ev.message;
        };
        await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = () => bad(new Error("the voice socket did not open (operator role? voice enabled?)")); });
      }
      ws.send(JSON.stringify({ type: "audio-start", rate: ctx.sampleRate, width: 2, channels: 1 }));
      ws.send(JSON.stringify({ type: "listen" }));
      src = ctx.createMediaStreamSource(stream);
      proc = ctx.createScriptProcessor(4096, 1, 1);
      proc.onaudioprocess = (e) => {
        const f = e.inputBuffer.getChannelData(0);
        const pcm = new Int16Array(f.length);
        for (let i = 0; i < f.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, f[i] * 32768));
        if (ws.readyState === 1) ws.send(pcm.buffer);
      };
      src.connect(proc); proc.connect(ctx.destination);
    };
    const playPcm = (buf) => {
      if (!ctx || !play) return;
      const pcm = new Int16Array(buf);
      const audio = ctx.createBuffer(1, pcm.length, play);
      const ch = audio.getChannelData(0);
      for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
      const node = ctx.createBufferSource();
      node.buffer = audio; node.connect(ctx.destination);
      playAt = Math.max(playAt, ctx.currentTime);
      node.start(playAt); playAt += audio.duration;
    };
    const guard = (fn) => () => fn().catch((e) => { status.textContent = e.message; stop(); });
    button.addEventListener("pointerdown", guard(start));
    button.addEventListener("pointerup", stop);
    button.addEventListener("pointerleave", () => { if (proc) stop(); });
    button.addEventListener("keydown", (e) => { if ((e.key === " " || e.key === "Enter") && !e.repeat) { e.preventDefault(); guard(start)(); } });
    button.addEventListener("keyup", (e) => { if (e.key === " " || e.key === "Enter") stop(); });
  }

  /* ------------------------------------------------------------------ models */
  async function models() {
    const table = $("models").tBodies[0];
    const render = async () => {
      const m = await api("/v1/models");
      C.bar($("membar"), m.memory_used_bytes || 0, m.memory_budget_bytes || 0, $("memtext"));
      const list = m.data || [];
      $("no-models").hidden = list.length > 0;
      C.rows(table, list, (x) => {
        const loaded = x.state === "loaded" || x.loaded === true;
        const actions = el("td", {});
        if (can("operator")) {
          const act = async (what) => {
            try { await api(`/v1/models/${encodeURIComponent(x.name)}/${what}`, { json: {} }); C.toast(`${x.name}: ${what}ed`, "ok"); }
            catch (e) { C.toast(`${x.name}: ${e.message}`, "bad"); }
            render();
          };
          actions.append(loaded
            ? el("button", { type: "button", class: "op", onclick: () => act("unload"), text: "Unload", "aria-label": `Unload ${x.name}` })
            : el("button", { type: "button", class: "op", onclick: () => act("load"), text: "Load", "aria-label": `Load ${x.name}` }));
        }
        const lat = x.latency || {};
        const engine = x.runtime ? `${x.runtime}${x.precision ? " " + x.precision : ""}` : x.would_run_on ? `would run on ${x.would_run_on}` : x.unavailable || x.install_hint || "–";
        return el("tr", { dataset: { model: x.name, state: x.state } }, el("th", { scope: "row", text: x.name }), el("td", { text: C.show(x.version || x.active_version || (x.versions || []).join(", ")) }),
          el("td", {}, C.badge(C.show(x.state), loaded ? "ok" : "")), el("td", { text: engine }), el("td", { text: C.show(x.device) }),
          el("td", { text: loaded ? C.bytes(x.memory_bytes) : "–" }),
          el("td", { text: lat.count ? `${lat.p50_ms} / ${lat.p95_ms} ms (${lat.count} runs)` : "–" }), actions);
      });
    };
    await render();
  }

  /* ------------------------------------------------------------------ logs & audit */
  async function logs() {
    const list = $("log");
    const add = (r) => {
      list.prepend(el("li", { class: "lv-" + (r.level || "info") }, el("time", { text: C.time(r.ts) }), " ", el("b", { text: (r.level || "").toUpperCase() }), " ", el("span", { class: "muted", text: r.logger || "" }), " ", r.message || ""));
      while (list.children.length > 500) list.lastChild.remove();
    };
    socket("/ui/logs", (m) => { if (m.type === "logs.recent") m.records.forEach(add); else add(m); });
    if (!can("admin")) { $("audit-verify").textContent = "The audit log is shown to admin tokens only."; $("audit").hidden = true; return; }
    const a = await api("/ui/audit");
    $("audit-verify").textContent = a.verify.ok ? `audit verify: OK, ${a.verify.rows} rows, chain intact` : `audit verify: ${a.verify.problems.length} problem(s): ${a.verify.problems.join("; ")}`;
    $("audit-verify").className = a.verify.ok ? "ok" : "bad";
    C.rows($("audit").tBodies[0], a.entries, (e) => el("tr", {}, el("td", { text: e.id }), el("td", { text: C.dateTime(e.ts) }), el("td", { text: e.actor }), el("td", { text: e.action }), el("td", { text: e.target })));
  }

  const pages = { overview, sensors, voice, models, logs };
  const page = pages[document.body.dataset.page];
  if (page) page().then(() => { document.body.dataset.ready = "1"; }).catch((e) => { C.toast(e.message, "bad"); document.body.dataset.ready = "error"; });
})();
