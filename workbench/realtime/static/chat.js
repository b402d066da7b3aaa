// Realtime chat client: one RTCPeerConnection to the workbench server.
// The server sends the avatar's audio and video tracks; the page sends its microphone and, over the
// "chat" data channel, typed messages and the stop button. No API key is ever stored by the page:
// it goes to the server once, in the offer, over the same origin.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const base = location.pathname.replace(/\/chat\/?$/, "");
  const params = new URLSearchParams(location.search);
  // A chat link from the workbench carries a grant for one avatar; the server names no other.
  const grant = params.get("grant");
  const state = {
    pc: null, dc: null, mic: null, sessionId: null, config: null, lastStats: null, fps: 0, assistant: null,
    face: null, phase: "idle", pendingUser: null, zoomTouched: false,
  };

  function log(text, cls = "") {
    const div = document.createElement("div");
    if (cls) div.className = cls;
    div.textContent = text;
    $("log").appendChild(div);
    $("log").scrollTop = $("log").scrollHeight;
    return div;
  }

  // The status line says one thing: where the call is (connecting, connected, failed) and, once connected, what
  // the voice is (the server's own description of it, in lighter type). The pill on the video says what the
  // avatar is doing with the user's turn: listening, thinking, or nothing while it idles or speaks.
  const status = { call: "Not connected", voice: "", detail: "" };
  const PHASES = { listening: "listening…", thinking: "thinking…" };
  function renderStatus() {
    const el = $("status");
    el.textContent = status.call;
    const detail = status.call === "Connected" && status.voice ? ` · ${status.voice}` : status.detail && ` — ${status.detail}`;
    if (detail) {
      const d = document.createElement("span");
      d.className = "detail";
      d.textContent = detail;
      el.appendChild(d);
    }
  }
  function setStatus(call, detail = "") {
    Object.assign(status, { call, detail });
    renderStatus();
  }
  function setPhase(phase) {
    state.phase = phase;
    $("phase").dataset.phase = phase;
    $("phase").textContent = PHASES[phase] || "";
  }

  // The user's turn in the transcript from the moment it is heard: a pending bubble that the transcript fills.
  function userBubble(spoken) {
    if (state.pendingUser) return state.pendingUser;
    const div = log(spoken ? "…" : "", spoken ? "user spoken pending" : "user");
    state.pendingUser = div;
    return div;
  }
  function settleUser(text, spoken) {
    const div = state.pendingUser || log("", spoken ? "user spoken" : "user");
    div.textContent = text;
    div.classList.remove("pending");
    state.pendingUser = null;
    $("log").scrollTop = $("log").scrollHeight;
  }

  function setConnected(on) {
    $("connect").disabled = on;
    $("hangup").disabled = !on;
    for (const id of ["text", "send", "stop"]) $(id).disabled = !on;
  }

  async function loadConfig() {
    const res = await fetch(`${base}/config`);
    state.config = await res.json();
    const cfg = state.config;
    if (grant) {
      $("avatarId").disabled = true;
      $("avatarField").hidden = true;
    } else {
      for (const id of cfg.avatars) $("avatarId").append(new Option(id, id));
      if (params.get("avatar")) $("avatarId").value = params.get("avatar");
      if (!cfg.open_avatars) log("open this chat from the workbench's Realtime chat tab", "note");
    }
    for (const v of cfg.voices) $("voice").append(new Option(v, v));
    $("voice").value = cfg.defaults.voice;
    $("model").value = cfg.defaults.model;
    if (cfg.defaults.reasoning_effort) $("reasoning").value = cfg.defaults.reasoning_effort;
    if (cfg.defaults.transcription_model !== undefined) $("transcription").value = cfg.defaults.transcription_model || "none";
    if (cfg.server_key) $("apiKey").placeholder = "optional: the server has a key";
    if (params.get("mode")) $("mode").value = params.get("mode");
    if (params.get("mic") === "0") $("useMic").checked = false;
    showMode();
  }

  function showMode() {
    $("openai").hidden = $("mode").value !== "openai";
    $("localHint").hidden = $("mode").value === "openai";
  }

  function offerBody(sdp) {
    const mode = $("mode").value;
    const body = { sdp: sdp.sdp, type: sdp.type, mode };
    if (grant) body.grant = grant;
    else body.avatar_id = $("avatarId").value || null;
    if (mode === "openai") {
      const key = $("apiKey").value.trim();
      if (key) body.api_key = key;
      body.realtime = {
        model: $("model").value.trim(),
        reasoning_effort: $("reasoning").value,
        transcription_model: $("transcription").value.trim() || "none",
        voice: $("voice").value,
        turn_detection: $("turn").value,
        vad_threshold: Number($("threshold").value),
        silence_duration_ms: Number($("silence").value),
      };
      if ($("instructions").value.trim()) body.realtime.instructions = $("instructions").value.trim();
      if ($("baseUrl").value.trim()) body.realtime.base_url = $("baseUrl").value.trim();
    }
    return body;
  }

  function waitForIce(pc) {
    // aiortc answers in one shot (no trickle), so send the offer with every candidate in it.
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000);
    });
  }

  async function connect() {
    setConnected(true);
    $("connect").disabled = true;
    setStatus("Connecting…");
    const pc = new RTCPeerConnection({ iceServers: state.config.ice_servers });
    state.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    if ($("useMic").checked) {
      try {
        state.mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true, channelCount: 1 } });
        for (const t of state.mic.getAudioTracks()) pc.addTrack(t, state.mic);
      } catch (err) {
        log(`microphone unavailable (${err.name}); typing still works`, "note");
        pc.addTransceiver("audio", { direction: "recvonly" });
      }
    } else {
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    const remote = new MediaStream();
    $("avatar").srcObject = remote;
    pc.ontrack = (e) => {
      remote.addTrack(e.track);
      $("avatar").play().catch(() => log("click the video to start sound", "note"));
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        setStatus(pc.connectionState === "failed" ? "Connection failed" : "Not connected");
        setConnected(false);
      }
    };
    const dc = pc.createDataChannel("chat");
    state.dc = dc;
    dc.onmessage = (e) => onServerMessage(JSON.parse(e.data));
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc);
    const body = offerBody(pc.localDescription);
    $("apiKey").value = "";  // sent with the offer below; the field keeps nothing
    let res;
    for (;;) {
      res = await fetch(`${base}/offer`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      if (res.status !== 503 || state.pc !== pc) break;
      // Every call slot is busy: the answer says how many wait ahead; keep our place by asking again.
      const busy = await res.clone().json().catch(() => null);
      if (!busy || busy.queue_position === undefined) break;
      if (busy.ticket) body.ticket = busy.ticket;
      setStatus(`Waiting: ${busy.queue_position} ahead of you`);
      log(busy.detail, "note");
      await new Promise((r) => setTimeout(r, 1000 * (busy.retry_after_s || 3)));
      if (state.pc !== pc) return;  // hung up while waiting
    }
    delete body.api_key;  // the server holds it now; the page keeps nothing
    if (!res.ok) {
      const err = await res.json().catch(() => ({ detail: res.statusText }));
      const detail = typeof err.detail === "string" ? err.detail : JSON.stringify(err.detail);
      log(detail, "error");
      hangup();
      setStatus("Could not connect", detail.slice(0, 160));
      return;
    }
    const answer = await res.json();
    state.sessionId = answer.session_id;
    state.face = Array.isArray(answer.face) && answer.face.length === 4 ? answer.face : null;
    $("faceZoom").disabled = !state.face;
    // A face that is a small part of the frame (a full-body video) is shown large unless the user said otherwise.
    if (state.face && !state.zoomTouched && faceIsSmall(state.face)) $("faceZoom").checked = true;
    applyZoom();  // also when Face zoom was ticked before Connect, while the face box was still unknown
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  }

  const SMALL_FACE = 0.12;  // of the frame's area: below this the face box is zoomed by default
  function faceIsSmall([x0, y0, x1, y1]) {
    return (x1 - x0) * (y1 - y0) < SMALL_FACE;
  }

  function onServerMessage(m) {
    switch (m.type) {
      case "status":
        if (m.status === "connected") {
          status.voice = m.text || "";
          setStatus("Connected");
          setPhase("ready");
        } else if (m.status === "connecting") setStatus("Connecting…", m.text || "");
        else if (m.status === "reconnecting") setStatus("Voice reconnecting…", m.text || "");
        else if (m.status === "failed") setStatus("Voice failed", m.text || "");
        else if (m.status === "closed") setStatus("Not connected");
        break;
      case "speech_started":
        setPhase("listening");
        userBubble(true);
        break;
      case "speech_stopped":
        setPhase("thinking");
        userBubble(true);
        break;
      case "user_transcript":
        settleUser(m.text, true);
        if (state.phase !== "speaking") setPhase("thinking");
        break;
      case "user_text":
        settleUser(m.text, false);
        setPhase("thinking");
        break;
      case "transcript":
        if (!state.assistant || state.assistant.dataset.item !== m.item_id) {
          state.assistant = log("", "assistant");
          state.assistant.dataset.item = m.item_id;
        }
        state.assistant.textContent += m.text;
        $("log").scrollTop = $("log").scrollHeight;
        setPhase("speaking");
        break;
      case "response_done":
        if (state.phase === "speaking" || state.phase === "thinking") setPhase("ready");
        break;
      case "note":
        if (state.pendingUser && /short sound|not words/.test(m.text)) {
          state.pendingUser.remove();  // it was not a turn after all
          state.pendingUser = null;
          setPhase("ready");
        }
        log(m.text, "note");
        break;
      case "barge_in":
        log(`(interrupted after ${(m.audio_end_ms / 1000).toFixed(1)} s)`, "note");
        break;
      case "latency":
        $("latency").textContent = `first frame ${m.first_frame_ms} ms after first audio`;
        break;
      case "error":
        log(m.message, "error");
        if (state.phase === "thinking") setPhase("ready");
        break;
      case "rtc":
        if (m.state === "failed" || m.state === "closed") setStatus(`Video ${m.state}`);
        break;
      default:
        break;
    }
  }

  function send(text) {
    if (state.dc && state.dc.readyState === "open") {
      state.dc.send(JSON.stringify({ type: "text", text }));
      return true;
    }
    return false;
  }

  function hangup() {
    if (state.dc) state.dc.close();
    if (state.pc) state.pc.close();
    if (state.mic) state.mic.getTracks().forEach((t) => t.stop());
    if (state.sessionId) fetch(`${base}/session/${state.sessionId}`, { method: "DELETE" }).catch(() => {});
    Object.assign(state, { pc: null, dc: null, mic: null, sessionId: null, pendingUser: null });
    status.voice = "";
    setConnected(false);
    setStatus("Not connected");
    setPhase("idle");
  }

  // Received-media statistics, also read by the browser test.
  async function stats() {
    if (!state.pc) return null;
    const out = { framesDecoded: 0, framesReceived: 0, audioBytes: 0, audioPackets: 0, totalAudioEnergy: 0, frameWidth: 0, frameHeight: 0, t: performance.now() };
    (await state.pc.getStats()).forEach((r) => {
      if (r.type !== "inbound-rtp") return;
      if (r.kind === "video") {
        out.framesDecoded = r.framesDecoded || 0;
        out.framesReceived = r.framesReceived || 0;
        out.frameWidth = r.frameWidth || 0;
        out.frameHeight = r.frameHeight || 0;
      } else if (r.kind === "audio") {
        out.audioBytes = r.bytesReceived || 0;
        out.audioPackets = r.packetsReceived || 0;
        out.totalAudioEnergy = r.totalAudioEnergy || 0;
      }
    });
    return out;
  }

  setInterval(async () => {
    const s = await stats();
    if (!s) return;
    if (state.lastStats) {
      const dt = (s.t - state.lastStats.t) / 1000;
      state.fps = (s.framesDecoded - state.lastStats.framesDecoded) / dt;
      $("fps").textContent = `${state.fps.toFixed(1)} fps · ${s.frameWidth}×${s.frameHeight}`;
    }
    state.lastStats = s;
  }, 1000);

  $("mode").addEventListener("change", showMode);
  $("setup").addEventListener("submit", (e) => { e.preventDefault(); connect().catch((err) => { log(String(err), "error"); hangup(); }); });
  $("hangup").addEventListener("click", hangup);
  $("say").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (text && send(text)) $("text").value = "";
  });
  $("stop").addEventListener("click", () => state.dc && state.dc.readyState === "open" && state.dc.send(JSON.stringify({ type: "interrupt" })));
  $("avatar").addEventListener("click", () => $("avatar").play());

  // Face zoom: the server sends the face box as fractions of the frame; the page draws that region of the
  // video, grown to a 4:5 window with a margin, onto a canvas at the canvas's own pixel size.
  const ZOOM_MARGIN = 0.35;  // of the face box, each side
  function zoomRect(vw, vh) {
    const [fx0, fy0, fx1, fy1] = state.face;
    const cx = (fx0 + fx1) / 2 * vw, cy = (fy0 + fy1) / 2 * vh;
    let w = (fx1 - fx0) * vw * (1 + 2 * ZOOM_MARGIN), h = (fy1 - fy0) * vh * (1 + 2 * ZOOM_MARGIN);
    if (w / h > 4 / 5) h = w * 5 / 4; else w = h * 4 / 5;
    w = Math.min(w, vw); h = Math.min(h, vh);
    const x = Math.min(Math.max(0, cx - w / 2), vw - w), y = Math.min(Math.max(0, cy - h / 2), vh - h);
    return [x, y, w, h];
  }
  function drawZoom() {
    const video = $("avatar"), canvas = $("zoom");
    if (!$("faceZoom").checked || !state.face) { zoomDrawing = false; return; }
    if (video.videoWidth > 0) {
      const r = canvas.getBoundingClientRect();
      const dpr = window.devicePixelRatio || 1;
      const cw = Math.max(1, Math.round(r.width * dpr)), ch = Math.max(1, Math.round(r.height * dpr));
      if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; }
      const ctx = canvas.getContext("2d");
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(video, ...zoomRect(video.videoWidth, video.videoHeight), 0, 0, cw, ch);
    }
    requestAnimationFrame(drawZoom);
  }
  let zoomDrawing = false;
  function applyZoom() {
    const on = $("faceZoom").checked && !!state.face;
    $("zoom").hidden = !on;
    $("avatar").classList.toggle("zoomed", on);
    if (on && !zoomDrawing) {
      zoomDrawing = true;
      requestAnimationFrame(drawZoom);
    }
  }
  $("faceZoom").addEventListener("change", () => {
    state.zoomTouched = true;
    applyZoom();
  });

  window.rtcChat = { state, stats, send, connect, hangup, zoomRect, onServerMessage };
  loadConfig().then(() => { if (params.get("autostart") === "1") $("connect").click(); })
    .catch((err) => log(`cannot load the realtime config: ${err}`, "error"));
})();
