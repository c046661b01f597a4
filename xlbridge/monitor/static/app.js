// xlbridge monitor page: live calls, captions, levels, latency, listen-in.
//
// Data comes from /api/calls (Bearer token) and /ws?token= (see
// xlbridge/monitor/live.py for the message types).  The token is read from
// this page's own ?token=.  Everything from the server is written with
// textContent, never as HTML.
"use strict";

(function () {
  const FLOOR_DB = -96;
  const SAMPLE_RATE = 16000;
  const PREBUFFER_S = 0.12;   // jitter buffer before playback starts
  const MAX_AHEAD_S = 0.5;    // drop frames rather than drift further behind
  const MAX_LINES = 50;       // caption lines kept per leg
  const MAX_LATENCY = 16;     // utterances in the chart
  const STAGES = [
    ["asr_ms", "#4e79a7"], ["mt_ms", "#f28e2b"], ["tts_first_byte_ms", "#59a14f"], ["queue_wait_ms", "#b07aa1"],
  ];

  const params = new URLSearchParams(window.location.search);
  const token = params.get("token") || "";

  const state = {
    ws: null,
    everOpened: false,
    reconnects: 0,
    backoff: 500,
    denied: false,
    calls: new Map(),        // call_id -> {el, legs: Map(ext -> leg view)}
    latency: [],             // rows of PlaybackStarted / status latency
    latencyKeys: new Set(),
    recent: [],
    mayListen: false,        // this page's token opens listen-in (hello says)
    listens: new Map(),      // listenKey(ext, direction) -> player
    streams: new Map(),      // stream id -> listenKey(ext, direction)
    audio: null,
    stats: { frames: 0, bytes: 0, lost: 0, played: 0, dropped: 0 },
  };
  // For tests and curious operators.
  window.xlMonitor = state;

  const $ = (id) => document.getElementById(id);

  function text(el, value) {
    el.textContent = value === undefined || value === null ? "" : String(value);
    return el;
  }

  function make(tag, cls, content) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (content !== undefined) text(el, content);
    return el;
  }

  function fmtTime(t) {
    if (typeof t !== "number") return "";
    return t > 1e9 ? new Date(t * 1000).toLocaleTimeString() : t.toFixed(1) + " s";
  }

  function fmtNum(v, digits) {
    return typeof v === "number" ? v.toFixed(digits || 0) : "–";
  }

  // -- access and connection state -------------------------------------------

  function setConn(stateName, label) {
    const el = $("conn");
    el.dataset.state = stateName;
    el.className = "conn conn-" + stateName;
    text(el, label);
  }

  function denyAccess(detail) {
    if (state.denied) return;
    state.denied = true;
    document.body.classList.add("denied");
    $("access-error").hidden = false;
    text($("access-detail"), detail ? " (" + detail + ")" : "");
    setConn("denied", "access denied");
    if (state.ws) {
      try { state.ws.close(); } catch (e) { /* already closed */ }
    }
  }

  function authHeaders() {
    return { Authorization: "Bearer " + token };
  }

  // GET /api/calls; null on refusal (after showing the access error).
  async function fetchCalls() {
    const response = await fetch("/api/calls", { headers: authHeaders(), cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      denyAccess(response.status === 401 ? "no token" : "the token was refused, HTTP 403");
      return null;
    }
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  async function refreshCalls() {
    if (state.denied) return;
    try {
      const doc = await fetchCalls();
      if (!doc) return;
      state.recent = doc.recent || [];
      renderRecent();
      for (const call of doc.calls || []) {
        updateCall(call);
        const view = state.calls.get(call.call_id);
        // Captions said before this page opened (once per leg, if none arrived live).
        const seed = new Set();
        if (view) view.legs.forEach((leg, ext) => {
          if (!leg.seeded && leg.lines.children.length === 0) seed.add(ext);
          leg.seeded = true;
        });
        for (const line of call.transcript || []) {
          if (seed.has(line.extension)) addLine(view.legs.get(line.extension), line);
        }
        addLatencyRows(call.call_id, call.latency || []);
      }
    } catch (e) {
      // The WebSocket's state tells the operator about connectivity.
    }
  }

  // -- WebSocket ---------------------------------------------------------------

  function connect() {
    if (state.denied) return;
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const url = scheme + "//" + window.location.host + "/ws?token=" + encodeURIComponent(token);
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    state.ws = ws;
    let opened = false;
    setConn("connecting", state.everOpened ? "reconnecting…" : "connecting…");
    ws.onopen = () => {
      opened = true;
      state.everOpened = true;
      state.backoff = 500;
      setConn("open", "live");
      // Listening survives a reconnect.
      for (const key of state.listens.keys()) sendListen("listen", key);
    };
    ws.onmessage = (msg) => {
      if (typeof msg.data === "string") {
        let m;
        try { m = JSON.parse(msg.data); } catch (e) { return; }
        handle(m);
      } else {
        audioFrame(msg.data);
      }
    };
    ws.onclose = async () => {
      if (state.ws !== ws) return;
      state.ws = null;
      if (state.denied) return;
      if (!opened) {
        // Browsers hide the refused upgrade's status: ask /api instead.
        try {
          if ((await fetchCalls()) === null) return;
        } catch (e) { /* server unreachable: retry below */ }
      }
      setConn("closed", "disconnected, retrying…");
      state.reconnects += 1;
      text($("reconnects"), state.reconnects);
      setTimeout(connect, state.backoff);
      state.backoff = Math.min(state.backoff * 2, 10000);
    };
  }

  function send(obj) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
  }

  // A leg's name may hold slashes (an ARI caller's channel name, such as
  // "PJSIP/7777-00000001"); directions never do, so keys split at the last one.
  function listenKey(ext, direction) {
    return ext + "/" + direction;
  }

  function splitKey(key) {
    const cut = key.lastIndexOf("/");
    return [key.slice(0, cut), key.slice(cut + 1)];
  }

  function sendListen(verb, key) {
    const [extension, direction] = splitKey(key);
    const body = {};
    body[verb] = { extension: extension, direction: direction };
    send(body);
  }

  function handle(m) {
    switch (m.type) {
      case "hello":
        setListenRight(m.listen === true);
        renderStatus(m.snapshot);
        break;
      case "status":
        renderStatus(m.status);
        break;
      case "levels":
        renderLevels(m.levels || {});
        break;
      case "event":
        handleEvent(m.event || {});
        break;
      case "call_ended":
        callEnded(m.call);
        break;
      case "listening":
        state.streams.set(m.stream, listenKey(m.extension, m.direction));
        break;
      case "unlistened":
        // Unasked when a leg is gone for good; an answer to our own unlisten
        // may arrive after the button was pressed again, so only then.
        if (m.reason === "gone") stopListen(listenKey(m.extension, m.direction));
        break;
      case "error":
        console.warn("monitor:", m.error);
        // A refused listen (leg gone, too many listens) must not stay "on".
        if (typeof m.extension === "string" && typeof m.direction === "string") {
          stopListen(listenKey(m.extension, m.direction));
        }
        break;
      default:
        break;
    }
  }

  // -- active calls --------------------------------------------------------------

  function renderStatus(status) {
    if (!status) return;
    const egress = status.egress || {};
    text($("egress-late"), egress.late_ticks || 0);
    text($("egress-skipped"), egress.skipped || 0);
    text($("egress-lateness"), fmtNum(egress.max_lateness_ms, 1));
    const seen = new Set();
    for (const call of status.calls || []) {
      seen.add(call.call_id);
      updateCall(call);
      addLatencyRows(call.call_id, call.latency || []);
    }
    for (const [id, view] of state.calls) {
      if (!seen.has(id)) removeCall(id, view);
    }
    text($("active-count"), "(" + state.calls.size + ")");
    $("no-calls").hidden = state.calls.size > 0;
  }

  function removeCall(id, view) {
    view.el.remove();
    state.calls.delete(id);
    text($("active-count"), "(" + state.calls.size + ")");
    $("no-calls").hidden = state.calls.size > 0;
  }

  function updateCall(call) {
    let view = state.calls.get(call.call_id);
    if (!view) {
      const el = $("call-template").content.firstElementChild.cloneNode(true);
      el.dataset.callId = call.call_id;
      view = { el: el, legs: new Map() };
      state.calls.set(call.call_id, view);
      $("calls").appendChild(el);
      $("no-calls").hidden = true;
      text($("active-count"), "(" + state.calls.size + ")");
    }
    const legs = call.legs || [];
    text(view.el.querySelector(".call-title"), legs.map((l) => l.extension + " (" + l.language + ")").join(" ↔ "));
    text(view.el.querySelector(".call-meta"),
      "call " + call.call_id + " · " + fmtNum(call.duration_s, 0) + " s");
    for (const leg of legs) updateLeg(view, leg);
  }

  function updateLeg(view, leg) {
    let lv = view.legs.get(leg.extension);
    if (!lv) {
      const el = $("leg-template").content.firstElementChild.cloneNode(true);
      el.dataset.extension = leg.extension;
      lv = {
        el: el, ext: leg.extension, lines: el.querySelector(".lines"), interim: el.querySelector(".interim"),
        seeded: false,
      };
      for (const button of el.querySelectorAll(".listen-btn")) {
        const key = listenKey(leg.extension, button.dataset.direction);
        button.addEventListener("click", () => toggleListen(key));
        showListen(button, button.dataset.direction, state.listens.has(key));
      }
      el.querySelector(".listen").hidden = !state.mayListen;
      view.legs.set(leg.extension, lv);
      view.el.querySelector(".legs").appendChild(el);
    }
    const el = lv.el;
    text(el.querySelector(".ext"), leg.extension);
    text(el.querySelector(".lang"), leg.language);
    const st = el.querySelector(".state");
    text(st, leg.state);
    st.className = "state state-" + leg.state;
    const t = leg.transport || {};
    text(el.querySelector(".transport"),
      (t.kind || "?") + " · " + (t.codec || "?") + (t.reply_codec && t.reply_codec !== t.codec ? " → " + t.reply_codec : "") +
      // WebSocket media: Asterisk keeps time; show what waits there.
      (typeof t.queued_ms === "number" ? " · " + Math.round(t.queued_ms) + " ms queued in Asterisk" : "") +
      (t.xoff ? " · XOFF" : ""));
    text(el.querySelector(".remote"), t.remote || "(none yet)");
    const p = leg.pipeline || {};
    const engines = p.engines || {};
    let engineText = p.kind === "translate"
      ? "asr " + (engines.asr || "?") + " · mt " + (engines.mt || "?") + " · tts " + (engines.tts || "?")
      : (p.kind || "relay");
    const down = Object.keys(p.down || {});
    if (down.length) engineText += " · DOWN: " + down.join(", ") + " (fallback " + p.fallback + ")";
    text(el.querySelector(".engines"), engineText);
    renderCounters(el.querySelector(".counters"), leg, p);
  }

  function renderCounters(box, leg, p) {
    const c = leg.counters || {};
    const drops = c.drops || {};
    const dropTotal = Object.values(drops).reduce((a, b) => a + b, 0);
    const items = [
      ["packets in", c.packets_in], ["out", c.packets_out], ["lost", c.lost],
      ["drops", dropTotal + (dropTotal ? " (" + Object.entries(drops).map((e) => e[0] + " " + e[1]).join(", ") + ")" : "")],
      ["late ticks", c.late_ticks], ["skipped ticks", c.skipped_ticks], ["silence out", c.silence_out],
      ["buffer", fmtNum(leg.buffer_ms, 0) + " ms"],
    ];
    if (p.kind === "translate") {
      items.push(["utterances", p.utterances], ["pending", fmtNum(p.pending_ms, 0) + " ms"],
        ["dropped backlog", p.dropped_backlog], ["dropped echo", p.dropped_echo]);
    }
    box.replaceChildren();
    for (const [name, value] of items) {
      const span = make("span", "counter");
      span.appendChild(make("span", "muted", name + " "));
      span.appendChild(make("b", "", value === undefined ? "–" : value));
      if ((name === "lost" || name === "drops" || name === "late ticks") && parseInt(value, 10) > 0) {
        span.classList.add("warn");
      }
      box.appendChild(span);
    }
  }

  function legViews(ext) {
    const out = [];
    for (const view of state.calls.values()) {
      const lv = view.legs.get(ext);
      if (lv) out.push(lv);
    }
    return out;
  }

  function legView(callId, ext) {
    const view = state.calls.get(callId);
    return view ? view.legs.get(ext) : undefined;
  }

  function renderLevels(levels) {
    for (const [ext, dirs] of Object.entries(levels)) {
      for (const lv of legViews(ext)) {
        for (const d of ["says", "hears"]) {
          const db = typeof dirs[d] === "number" ? dirs[d] : FLOOR_DB;
          const meter = lv.el.querySelector(".meter-" + d);
          meter.value = db;
          meter.dataset.db = db;
          text(lv.el.querySelector(".db-" + d), db.toFixed(0));
        }
      }
    }
  }

  // -- captions ---------------------------------------------------------------------

  function handleEvent(e) {
    switch (e.event) {
      case "CallStarted":
        refreshCalls();
        break;
      case "TranscriptEvent": {
        const lv = legView(e.call_id, e.extension);
        if (!lv) break;
        if (!e.is_final) {
          text(lv.interim, e.text);
        } else {
          text(lv.interim, "");
          if (e.text) addLine(lv, { kind: "said", text: e.text, language: e.language, time: e.time });
        }
        break;
      }
      case "TranslationEvent": {
        const lv = legView(e.call_id, e.extension);
        if (lv) addLine(lv, { kind: "translated", text: e.text, language: e.language,
          source_text: e.source_text, time: e.time });
        break;
      }
      case "UtteranceDropped": {
        const lv = legView(e.call_id, e.extension);
        if (lv) addLine(lv, { kind: "dropped", text: e.text, reason: e.reason, time: e.time });
        break;
      }
      case "EngineStatusEvent": {
        const lv = legView(e.call_id, e.extension);
        if (lv) addLine(lv, { kind: "engine", engine: e.engine, state: e.state, fallback: e.fallback,
          text: e.error, time: e.time });
        break;
      }
      case "PlaybackStarted":
        addLatencyRows(e.call_id, [e]);
        break;
      default:
        break;
    }
  }

  // A final transcript becomes a line; its translation joins that line.
  function addLine(lv, line) {
    if (line.kind === "translated") {
      for (const li of lv.lines.children) {
        if (li.dataset.kind === "said" && !li.dataset.translated && li.dataset.source === line.source_text) {
          li.dataset.translated = "1";
          li.appendChild(make("div", "translation", "→ " + (line.language || "") + ": " + line.text));
          return;
        }
      }
      const li = make("li", "line line-said");
      li.dataset.kind = "said";
      li.dataset.translated = "1";
      li.appendChild(make("div", "final", line.source_text || ""));
      li.appendChild(make("div", "translation", "→ " + (line.language || "") + ": " + line.text));
      lv.lines.appendChild(li);
    } else if (line.kind === "said") {
      const li = make("li", "line line-said");
      li.dataset.kind = "said";
      li.dataset.source = line.text;
      li.appendChild(make("div", "final", line.text));
      lv.lines.appendChild(li);
    } else if (line.kind === "dropped") {
      lv.lines.appendChild(make("li", "line line-dropped", "dropped (" + line.reason + "): " + (line.text || "")));
    } else if (line.kind === "engine") {
      lv.lines.appendChild(make("li", "line line-engine",
        "engine " + line.engine + " " + line.state + (line.state === "down" ? " → " + line.fallback : "") +
        (line.text ? ": " + line.text : "")));
    }
    while (lv.lines.children.length > MAX_LINES) lv.lines.firstElementChild.remove();
    lv.lines.scrollTop = lv.lines.scrollHeight;
  }

  // -- latency chart ---------------------------------------------------------------

  function addLatencyRows(callId, rows) {
    let changed = false;
    for (const r of rows) {
      const key = callId + "/" + r.extension + "/" + r.speaker + "/" + r.utterance;
      if (state.latencyKeys.has(key)) continue;
      state.latencyKeys.add(key);
      state.latency.push(r);
      changed = true;
    }
    if (!changed) return;
    state.latency.sort((a, b) => a.time - b.time);
    while (state.latency.length > MAX_LATENCY) state.latency.shift();
    drawLatency();
  }

  function drawLatency() {
    const canvas = $("latency");
    const ctx = canvas.getContext("2d");
    const w = canvas.width;
    const h = canvas.height;
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    const rows = state.latency;
    canvas.dataset.bars = rows.length;
    if (!rows.length) {
      ctx.fillStyle = "#888";
      ctx.fillText("no translated utterances yet", 10, h / 2);
      return;
    }
    const totals = rows.map((r) => STAGES.reduce((s, [k]) => s + (r[k] || 0), 0));
    const max = Math.max(100, ...totals, ...rows.map((r) => r.total_ms || 0));
    const left = 44, bottom = h - 18, top = 14;
    const scale = (bottom - top) / max;
    ctx.strokeStyle = "#ccc";
    ctx.fillStyle = "#666";
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      const y = bottom - v * scale;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w, y); ctx.stroke();
      ctx.fillText(Math.round(v) + "", 4, y + 4);
    }
    const slot = (w - left) / MAX_LATENCY;
    const bw = Math.max(6, slot * 0.6);
    rows.forEach((r, i) => {
      const x = left + i * slot + (slot - bw) / 2;
      let y = bottom;
      for (const [k, color] of STAGES) {
        const v = r[k] || 0;
        ctx.fillStyle = color;
        ctx.fillRect(x, y - v * scale, bw, v * scale);
        y -= v * scale;
      }
      if (typeof r.total_ms === "number") {
        ctx.fillStyle = "#000";
        ctx.fillRect(x - 2, bottom - r.total_ms * scale, bw + 4, 2);
      }
      ctx.fillStyle = "#333";
      ctx.fillText(String(r.speaker || "") + "#" + r.utterance, x, h - 5);
      ctx.fillText(fmtNum(r.total_ms, 0), x, Math.max(top, y - 3 - (r.total_ms ? 0 : 0)));
    });
  }

  // -- recent calls --------------------------------------------------------------------

  function callEnded(record) {
    if (record) {
      state.recent = [record].concat(state.recent.filter((r) => r.call_id !== record.call_id));
      renderRecent();
      const view = state.calls.get(record.call_id);
      if (view) removeCall(record.call_id, view);
    }
  }

  function renderRecent() {
    const box = $("recent");
    box.replaceChildren();
    $("no-recent").hidden = state.recent.length > 0;
    for (const r of state.recent) {
      const d = make("details", "recent-call");
      d.dataset.callId = r.call_id;
      const exts = r.extensions || [];
      const langs = r.languages || [];
      d.appendChild(make("summary", "",
        exts.map((e, i) => e + (langs[i] ? " (" + langs[i] + ")" : "")).join(" ↔ ") +
        " · " + fmtTime(r.started_at) + " · " + fmtNum(r.duration_s, 1) + " s · " + (r.reason || "") +
        " · " + (r.transcript || []).length + " lines"));
      const ol = make("ol", "transcript");
      for (const line of r.transcript || []) {
        let s = "[" + fmtTime(line.time) + "] " + line.extension + " " + line.kind + ": " + (line.text || "");
        if (line.kind === "translated") s += "  (from " + line.source_language + ": " + line.source_text + ")";
        if (line.kind === "dropped") s += "  (" + line.reason + ")";
        ol.appendChild(make("li", "line-" + line.kind, s));
      }
      if (!ol.children.length) ol.appendChild(make("li", "muted", "no transcript"));
      d.appendChild(ol);
      box.appendChild(d);
    }
  }

  // -- listen-in -------------------------------------------------------------------------

  // Only the listen token opens live audio; with the view token the Listen
  // buttons are hidden (the server would refuse anyway).
  function setListenRight(allowed) {
    state.mayListen = allowed;
    document.body.dataset.listen = allowed ? "yes" : "no";
    $("listen-right").hidden = allowed;
    for (const el of document.querySelectorAll("#calls .leg .listen")) el.hidden = !allowed;
    if (!allowed) {
      for (const key of [...state.listens.keys()]) stopListen(key);
    }
  }

  function audioContext() {
    if (!state.audio) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      try {
        state.audio = new Ctx({ sampleRate: SAMPLE_RATE, latencyHint: "interactive" });
      } catch (e) {
        // Buffers stay at 16 kHz; the context resamples them.
        state.audio = new Ctx();
      }
    }
    if (state.audio.state === "suspended") state.audio.resume();
    return state.audio;
  }

  function toggleListen(key) {
    if (state.listens.has(key)) {
      stopListen(key);
      sendListen("unlisten", key);
      return;
    }
    const ctx = audioContext();
    const gain = ctx.createGain();
    gain.connect(ctx.destination);
    state.listens.set(key, { key: key, gain: gain, next: 0, pending: [], lastSeq: null, frames: 0, lost: 0 });
    sendListen("listen", key);
    showListens(key);
  }

  // Drop the local player (the server was told already, or told us).
  function stopListen(key) {
    const player = state.listens.get(key);
    if (!player) return;
    state.listens.delete(key);
    player.gain.disconnect();
    showListens(key);
  }

  function showListens(key) {
    const [ext, direction] = splitKey(key);
    for (const lv of legViews(ext)) {
      const button = lv.el.querySelector('.listen-btn[data-direction="' + direction + '"]');
      if (button) showListen(button, direction, state.listens.has(key));
    }
  }

  function showListen(button, direction, on) {
    button.classList.toggle("on", on);
    text(button, (on ? "Stop: " : "Listen: ") + direction);
  }

  function audioFrame(buf) {
    if (buf.byteLength < 4) return;
    const view = new DataView(buf);
    const stream = view.getUint16(0);
    const seq = view.getUint16(2);
    const key = state.streams.get(stream);
    const player = key && state.listens.get(key);
    if (!player) return;
    const n = (buf.byteLength - 4) >> 1;
    state.stats.frames += 1;
    state.stats.bytes += buf.byteLength;
    player.frames += 1;
    if (player.lastSeq !== null) {
      const gap = (seq - player.lastSeq - 1) & 0xffff;
      if (gap > 0 && gap < 1000) { player.lost += gap; state.stats.lost += gap; }
    }
    player.lastSeq = seq;
    const samples = new Float32Array(n);
    for (let i = 0; i < n; i++) samples[i] = view.getInt16(4 + 2 * i, true) / 32768;
    schedule(player, samples);
    const [ext] = splitKey(key);
    for (const lv of legViews(ext)) {
      text(lv.el.querySelector(".frames"), player.frames);
      text(lv.el.querySelector(".frames-lost"), player.lost);
    }
    document.body.dataset.audioFrames = state.stats.frames;
    document.body.dataset.audioBytes = state.stats.bytes;
  }

  // A small jitter buffer: gather PREBUFFER_S of audio, then schedule each
  // frame back to back; on underrun gather again, and never run more than
  // MAX_AHEAD_S behind (drop instead).
  function schedule(player, samples) {
    const ctx = state.audio;
    if (!ctx || samples.length === 0) return;
    const now = ctx.currentTime;
    if (player.next < now) {
      player.pending.push(samples);
      const buffered = player.pending.reduce((s, x) => s + x.length, 0) / SAMPLE_RATE;
      if (buffered < PREBUFFER_S) return;
      player.next = now + 0.02;
      const queued = player.pending;
      player.pending = [];
      for (const x of queued) play(player, x);
      return;
    }
    if (player.next - now > MAX_AHEAD_S) {
      state.stats.dropped += 1;
      return;
    }
    play(player, samples);
  }

  function play(player, samples) {
    const ctx = state.audio;
    const buffer = ctx.createBuffer(1, samples.length, SAMPLE_RATE);
    buffer.copyToChannel(samples, 0);
    const src = ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(player.gain);
    src.start(player.next);
    player.next += samples.length / SAMPLE_RATE;
    state.stats.played += 1;
  }

  // -- start --------------------------------------------------------------------------------

  function start() {
    drawLatency();
    $("refresh-recent").addEventListener("click", refreshCalls);
    if (!token) {
      denyAccess("no ?token= in the page address");
      return;
    }
    refreshCalls();
    connect();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
