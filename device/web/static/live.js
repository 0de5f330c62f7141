// The live page: controls -> WebSocket -> (wavae web) -> OSC -> instrument; status back the same way.
"use strict";
const SOUND = ["scale", "noise", "loudness", "output_gain", "smoothing"];
const FEEDBACK = ["feedback_freq", "feedback_q", "feedback_gain"];
const LABELS = {feedback_freq: "frequency", feedback_q: "Q", feedback_gain: "gain", output_gain: "output gain"};
const HOLD_MS = 1500;  // a control touched this recently is not moved by the status echo
let ws = null, specs = {}, touched = {}, presetPick = null, modelPick = null, lastPresets = [];

// feedback_freq moves on a log scale, every other float linearly
function toSlider(spec, v) {
  if (spec.name === "feedback_freq") return 1000 * Math.log(v / spec.low) / Math.log(spec.high / spec.low);
  return 1000 * (v - spec.low) / (spec.high - spec.low);
}
function fromSlider(spec, s) {
  if (spec.name === "feedback_freq") return spec.low * Math.pow(spec.high / spec.low, s / 1000);
  return spec.low + (spec.high - spec.low) * s / 1000;
}
function show(spec, v) {
  return spec.name === "feedback_freq" ? `${v >= 1000 ? fmt(v / 1000, 2) + " k" : fmt(v, 0) + " "}Hz` : fmt(v, 2);
}

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function setControl(name, value) {
  touched[name] = performance.now();
  send({type: "set", name, value});
}

function slider(spec, name, label) {
  const out = el("output", {}, show(spec, spec.default));
  const input = el("input", {type: "range", min: 0, max: 1000, step: 1, "data-control": name,
                             value: toSlider(spec, spec.default)});
  input.addEventListener("input", () => {
    const v = fromSlider(spec, Number(input.value));
    out.textContent = show(spec, v);
    setControl(name, Math.round(v * 1e4) / 1e4);
  });
  input.update = v => { input.value = toSlider(spec, v); out.textContent = show(spec, v); };
  return {input, out, row: el("div", {class: "row"}, el("label", {}, label), input, out)};
}

function build(info) {
  for (const s of info.controls) specs[s.name] = s;
  const bias = specs.bias;
  if (bias) {
    const spec = {name: "bias", low: bias.low, high: bias.high, default: 0};
    $("#bias").replaceChildren(...Array.from({length: bias.dims}, (_, k) => {
      const {input, out} = slider(spec, `bias.${k}`);
      return el("div", {class: "knob"}, out, input, el("span", {}, String(k)));
    }));
  } else {
    $("#bias").append(el("div", {class: "hint"}, "no bundle configured: the latent size is unknown"));
  }
  for (const [box, names] of [["#sound", SOUND], ["#feedback", FEEDBACK]]) {
    for (const n of names) if (specs[n]) $(box).append(slider(specs[n], n, LABELS[n] || n).row);
  }
  for (const b of $$("[data-toggle]")) {
    b.addEventListener("click", () => {
      const on = !b.classList.contains("on");
      setToggle(b, on);
      const name = b.dataset.toggle;
      setControl(name, b.dataset.on ? (on ? b.dataset.on : b.dataset.off) : on);
    });
  }
  fillPresets(info.presets);
  fillList($("#models"), info.models, info.bundle, n => { modelPick = n; });
  modelPick = info.bundle;
  $("#st-bundle").textContent = info.bundle || "–";
}

function setToggle(b, on) {
  b.classList.toggle("on", on);
  if (b.dataset.toggle === "loudness_source") b.textContent = `loudness: ${on ? "manual" : "input"}`;
}

function fillPresets(names) {
  lastPresets = names;
  fillList($("#presets"), names, presetPick, n => { presetPick = n; $("#preset-name").value = n; });
}

function applyStatus(msg) {
  $("#conn-dot").classList.toggle("on", !!msg.answering);
  $("#conn").textContent = msg.answering ? "instrument answering" : "instrument not answering";
  const st = msg.status || {}, m = msg.machine || {};
  if (msg.answering) {
    $("#st-bundle").textContent = st.bundle || "–";
    $("#st-preset").textContent = st.preset || "–";
    $("#st-xruns").textContent = st.xruns ?? "–";
    $("#st-latency").textContent = st.latency_ms != null ? `${fmt(st.latency_ms, 1)} ms` : "–";
    $("#st-load").textContent = st.load != null ? `${fmt(100 * st.load, 0)} %` : "–";
    $("#st-uptime").textContent = duration(st.uptime_s);
  }
  $("#st-cpu").textContent = m.cpu_percent != null ? `${fmt(m.cpu_percent, 0)} %` : "–";
  $("#st-temp").textContent = m.temperature_c != null ? `${fmt(m.temperature_c, 1)} °C` : "n/a";
  if (msg.presets && msg.presets.join() !== lastPresets.join()) fillPresets(msg.presets);
  const now = performance.now(), c = st.controls || {};
  for (const [name, v] of Object.entries(c)) {
    if (name === "bias") {
      v.forEach((b, k) => {
        const input = $(`[data-control="bias.${k}"]`);
        if (input && !(now - (touched[`bias.${k}`] || -1e9) < HOLD_MS)) input.update(b);
      });
      continue;
    }
    if (now - (touched[name] || -1e9) < HOLD_MS) continue;
    const input = $(`[data-control="${name}"]`);
    if (input && typeof v === "number") input.update(v);
    const t = $(`[data-toggle="${name}"]`);
    if (t) setToggle(t, t.dataset.on ? v === t.dataset.on : !!v);
  }
}

function connect() {
  ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.onmessage = e => {
    const msg = JSON.parse(e.data);
    if (msg.type === "status") applyStatus(msg);
    else if (msg.type === "presets") { fillPresets(msg.names); say($("#preset-msg"), msg.message || ""); }
    else if (msg.type === "notice" || msg.type === "error") {
      say($(msg.about === "model" ? "#model-msg" : "#preset-msg"), msg.message, msg.type === "error");
    }
  };
  ws.onclose = () => {
    $("#conn-dot").classList.remove("on");
    $("#conn").textContent = "page disconnected; retrying…";
    setTimeout(connect, 2000);
  };
}

function presetAction(action) {
  const name = $("#preset-name").value.trim();
  if (action === "rename") {
    if (!presetPick) return say($("#preset-msg"), "pick the preset to rename, type its new name", true);
    return send({type: "preset", action, name: presetPick, to: name});
  }
  const target = action === "save" ? name : (presetPick || name);
  if (!target) return say($("#preset-msg"), "type a name or pick a preset", true);
  if (action === "delete" && !confirm(`Delete preset ${target}?`)) return;
  send({type: "preset", action, name: target});
}

$("#preset-save").onclick = () => presetAction("save");
$("#preset-load").onclick = () => presetAction("load");
$("#preset-rename").onclick = () => presetAction("rename");
$("#preset-delete").onclick = () => presetAction("delete");
$("#model-switch").onclick = () => {
  if (modelPick) send({type: "bundle", name: modelPick});
};
window.addEventListener("error", e => say($("#preset-msg"), String(e.message), true));

api("/api/info").then(info => { build(info); connect(); })
  .catch(e => say($("#preset-msg"), e.message, true));
