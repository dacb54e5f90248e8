// The /rtc page: speech to text over WebRTC (the server's side is transports/http_rtc.py).
// One peer connection carries the microphone and a data channel for WIS's messages; between
// utterances the microphone's track is paused (replaceTrack(null)), as WIS's own client does.
"use strict";

const TAIL_MS = 300; // the last words are still on their way when Stop is pressed
const GATHER_MS = 3000; // on a LAN the host candidates are there long before this

const $ = (id) => document.getElementById(id);
const ui = {
  key: $("api-key"),
  model: $("model"),
  beam: $("beam-size"),
  detect: $("detect-language"),
  talk: $("talk"),
  state: $("state"),
  rtt: $("rtt"),
  partial: $("partial"),
  finals: $("finals"),
  log: $("log"),
};

// Kept on window for whoever wants to look (the tests do).
const rtc = (window.wisRtc = {
  pc: null,
  channel: null,
  sender: null,
  track: null,
  talking: false,
  busy: false,
  micStartedAt: null,
  stoppedAt: null,
  finals: [],
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function log(text) {
  ui.log.textContent = `${new Date().toLocaleTimeString()}  ${text}\n${ui.log.textContent}`;
}

function setState(text) {
  ui.state.textContent = text;
}

function apiHeaders(extra) {
  const key = ui.key.value.trim();
  return key ? { ...extra, "X-API-Key": key } : { ...extra };
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: apiHeaders(options.headers || {}) });
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says enough
  }
  if (!response.ok) {
    const error = new Error(body && body.message ? body.message : `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

async function loadModels() {
  try {
    const status = await api("/api/status");
    const models = status.asr.resident.length ? status.asr.resident : [status.asr.default_model];
    const chosen = ui.model.value || status.asr.default_model;
    ui.model.replaceChildren(...models.map((name) => new Option(name, name, false, name === chosen)));
    ui.talk.disabled = false;
    setState(rtc.pc ? "connected" : "ready");
  } catch (err) {
    ui.talk.disabled = true;
    setState(err.status === 401 ? "enter the API key" : `cannot reach the server: ${err.message}`);
  }
}

function options() {
  const obj = { model: ui.model.value || null, detect_language: ui.detect.checked };
  const beam = parseInt(ui.beam.value, 10);
  if (!Number.isNaN(beam)) obj.beam_size = beam;
  return obj;
}

function send(message) {
  if (!rtc.channel || rtc.channel.readyState !== "open") throw new Error("not connected");
  rtc.channel.send(JSON.stringify(message));
}

function iceGathered(pc) {
  return new Promise((resolve) => {
    const check = () => {
      if (pc.iceGatheringState === "complete") resolve();
    };
    pc.addEventListener("icegatheringstatechange", check);
    check();
    setTimeout(resolve, GATHER_MS);
  });
}

async function connect() {
  if (!navigator.mediaDevices) {
    throw new Error("this browser gives the microphone only to https:// pages (or localhost)");
  }
  setState("connecting…");
  const config = await api("/api/rtc/config");
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: true },
    video: false,
  });
  rtc.micStartedAt = performance.now();
  rtc.track = stream.getAudioTracks()[0];
  const pc = new RTCPeerConnection({ iceServers: config.ice_servers });
  rtc.pc = pc;
  rtc.sender = pc.addTrack(rtc.track, stream);
  const channel = pc.createDataChannel("wis", { ordered: true });
  rtc.channel = channel;
  channel.onmessage = (event) => onMessage(event.data);
  channel.onclose = () => disconnect("the session ended");
  pc.onconnectionstatechange = () => {
    log(`connection ${pc.connectionState}`);
    if (pc.connectionState === "failed" || pc.connectionState === "closed") {
      disconnect(`connection ${pc.connectionState}`);
    }
  };
  const opened = new Promise((resolve, reject) => {
    channel.onopen = resolve;
    setTimeout(() => reject(new Error("the data channel did not open")), 15000);
  });
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  const answer = await api("/api/rtc/asr", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
  });
  await pc.setRemoteDescription(answer);
  await opened;
  send({ type: "ping", message: String(performance.now()) });
  log("connected");
}

function disconnect(reason) {
  if (!rtc.pc) return;
  const { pc, track } = rtc;
  Object.assign(rtc, { pc: null, channel: null, sender: null, track: null, talking: false });
  pc.close();
  if (track) track.stop();
  ui.talk.textContent = "Talk";
  ui.talk.classList.remove("talking");
  setState(reason);
  log(reason);
}

async function startTalking() {
  if (!rtc.pc) await connect();
  send({ type: "start", obj: { ...options(), partial: true } });
  await rtc.sender.replaceTrack(rtc.track);
  rtc.talking = true;
  ui.partial.textContent = "";
  ui.talk.textContent = "Stop";
  ui.talk.classList.add("talking");
  setState("listening…");
}

async function stopTalking() {
  await sleep(TAIL_MS);
  rtc.stoppedAt = performance.now();
  send({ type: "stop", obj: options() });
  await rtc.sender.replaceTrack(null);
  rtc.talking = false;
  ui.talk.textContent = "Talk";
  ui.talk.classList.remove("talking");
  setState("transcribing…");
}

async function toggleTalk() {
  if (rtc.busy) return;
  rtc.busy = true;
  ui.talk.disabled = true;
  try {
    await (rtc.talking ? stopTalking() : startTalking());
  } catch (err) {
    log(`error: ${err.message}`);
    disconnect(err.message);
    setState(err.message);
  } finally {
    rtc.busy = false;
    ui.talk.disabled = false;
  }
}

function onMessage(data) {
  let message;
  try {
    message = JSON.parse(data);
  } catch {
    log(`unreadable message: ${data}`);
    return;
  }
  const obj = message.obj || {};
  switch (message.type) {
    case "pong":
      ui.rtt.textContent = `${Math.round(performance.now() - Number(message.message))} ms`;
      break;
    case "log":
      log(message.message);
      break;
    case "partial":
      ui.partial.textContent = obj.text;
      break;
    case "infer":
      addFinal(obj);
      break;
    case "error":
      log(`error (${obj.error}): ${message.message}`);
      setState(message.message);
      break;
    default:
      log(`unknown message type ${message.type}`);
  }
}

function addFinal(result) {
  const after = rtc.stoppedAt === null ? null : Math.round(performance.now() - rtc.stoppedAt);
  const item = document.createElement("li");
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = result.text || "(nothing said)";
  const timing = document.createElement("span");
  timing.className = "timing";
  timing.textContent =
    `${result.model} · ${(result.audio_duration / 1000).toFixed(1)} s of audio · ` +
    `transcript ${Math.round(result.infer_time)} ms after stop on the server` +
    (after === null ? "" : `, ${after} ms here`);
  item.append(text, timing);
  ui.finals.prepend(item);
  ui.partial.textContent = "";
  rtc.finals.push({ ...result, shown_after_ms: after });
  if (!rtc.talking) setState("ready");
}

// ?api_key= fills the key (and leaves the address bar, so it is not bookmarked with it).
const params = new URLSearchParams(location.search);
if (params.has("api_key")) {
  sessionStorage.setItem("wis-api-key", params.get("api_key"));
  params.delete("api_key");
  history.replaceState(null, "", location.pathname + (params.toString() ? `?${params}` : ""));
}
ui.key.value = sessionStorage.getItem("wis-api-key") || "";
ui.key.addEventListener("change", () => {
  sessionStorage.setItem("wis-api-key", ui.key.value.trim());
  loadModels();
});
ui.talk.addEventListener("click", toggleTalk);
window.addEventListener("pagehide", () => disconnect("page closed"));
loadModels();
