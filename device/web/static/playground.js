// The playground: sounds -> latent paths -> operators / A->B / plane -> render (a niced worker on the device).
"use strict";
const RANGE = 4;  // the curve editor's y axis: +-4 std
const st = {sounds: [], analyses: {}, ops: [], curves: {}, gesture: [], point: [0.5, 0.5], latentDim: 0};

function slots() { return $$("[data-slot]").map(s => s.value).filter(Boolean); }
function sourceKind() { return $("input[name=source]:checked").value; }

async function loadSounds(select) {
  const {sounds} = await api("/api/playground/sounds");
  st.sounds = sounds.map(s => s.name);
  fillList($("#sounds"), st.sounds, select, name => setSlot(0, name));
  $$("[data-slot]").forEach((sel, i) => {
    const keep = sel.value || st.sounds[Math.min(i, st.sounds.length - 1)] || "";
    sel.replaceChildren(...st.sounds.map(n => el("option", {value: n}, n)));
    sel.value = keep;
  });
  if (select) setSlot(0, select);
  else if (st.sounds.length) showInput();
}

function setSlot(i, name) {
  $(`[data-slot="${i}"]`).value = name;
  if (i === 0) showInput();
}

async function analysis(name) {
  if (!st.analyses[name]) st.analyses[name] = await api(`/api/playground/sound?name=${encodeURIComponent(name)}`);
  return st.analyses[name];
}

async function showInput() {
  const a = $("[data-slot='0']").value;
  if (!a) return;
  const res = await analysis(a);
  drawSpectrogram($("#in-spec"), res.spectrogram);
  drawLatent($("#in-latent"), res.path);
  drawCurve();
}

async function upload() {
  const file = $("#upload").files[0];
  if (!file) return say($("#sound-msg"), "choose a WAV file first", true);
  say($("#sound-msg"), `uploading and encoding ${file.name}…`);
  try {
    const res = await api(`/api/playground/upload?name=${encodeURIComponent(file.name)}`,
                          {method: "POST", body: file, headers: {"Content-Type": "audio/wav"}});
    st.analyses[res.name] = res;
    say($("#sound-msg"), `${res.name}: ${fmt(res.path.seconds, 2)} s, ${res.path.frames} latent frames`);
    await loadSounds(res.name);
  } catch (e) { say($("#sound-msg"), e.message, true); }
}

// -- operators -------------------------------------------------------------------------
function opText(o) {
  if (o.op === "scale") return `scale × ${o.s}`;
  if (o.op === "bias") return `bias dim ${o.dim} + ${o.value}`;
  if (o.op === "randomize") return `randomize σ ${o.sigma} (seed ${o.seed})`;
  return o.op;
}
function showOps() {
  $("#ops").replaceChildren(...st.ops.map((o, i) => el("li", {}, opText(o),
    el("button", {title: "remove", onclick: () => { st.ops.splice(i, 1); showOps(); }}, "×"))));
  const curves = Object.keys(st.curves).filter(d => st.curves[d].length);
  for (const d of curves) {
    $("#ops").append(el("li", {}, `curve dim ${d} (${st.curves[d].length} points, ${$("#curve-mode").value})`));
  }
}
$$("[data-add]").forEach(b => b.addEventListener("click", () => {
  const kind = b.dataset.add;
  if (kind === "scale") st.ops.push({op: "scale", s: Number($("#op-scale").value)});
  if (kind === "bias") st.ops.push({op: "bias", dim: Number($("#op-bias-dim").value), value: Number($("#op-bias").value)});
  if (kind === "randomize") st.ops.push({op: "randomize", sigma: Number($("#op-sigma").value), seed: Number($("#op-seed").value)});
  if (kind === "reverse") st.ops.push({op: "reverse"});
  showOps();
}));

function program() {
  const ops = st.ops.slice();
  for (const [d, pts] of Object.entries(st.curves)) {
    if (pts.length) ops.push({op: "curve", dim: Number(d), points: pts.map(p => [p[0], p[1]]), mode: $("#curve-mode").value});
  }
  const kind = sourceKind(), names = slots();
  const need = {path: 1, interpolate: 2, plane: 4}[kind];
  const source = {kind, sounds: $$("[data-slot]").slice(0, need).map(s => s.value)};
  if (kind === "plane") source.xy = st.gesture.length > 1 ? st.gesture : st.point;
  return {source, ops, ready: source.sounds.every(Boolean) && names.length >= need};
}

async function render() {
  const p = program();
  if (!p.ready) return say($("#render-msg"), "pick a sound for every slot this source uses", true);
  $("#render").disabled = true;
  say($("#render-msg"), "rendering (at low priority on the device)…");
  try {
    const res = await api("/api/playground/render", {method: "POST", body: JSON.stringify({source: p.source, ops: p.ops}),
                                                     headers: {"Content-Type": "application/json"}});
    drawSpectrogram($("#out-spec"), res.spectrogram);
    drawLatent($("#out-latent"), res.path);
    $("#player").src = res.wav;
    $("#player").dataset.render = res.name;
    const dl = $("#download");
    dl.href = `${res.wav}?download=1`; dl.hidden = false; dl.setAttribute("download", `${res.name}.wav`);
    say($("#render-msg"), `${res.name}: ${fmt(res.seconds, 2)} s, peak ${fmt(res.peak, 2)}`);
  } catch (e) { say($("#render-msg"), e.message, true); }
  $("#render").disabled = false;
}

// -- the curve editor ------------------------------------------------------------------
function curveDim() { return Number($("#curve-dim").value || 0); }
function canvasXY(canvas, ev) {
  const r = canvas.getBoundingClientRect();
  return [(ev.clientX - r.left) / r.width, (ev.clientY - r.top) / r.height];
}
function drawCurve() {
  const c = $("#curve"), a = $("[data-slot='0']").value, d = curveDim();
  drawLatent(c, a && st.analyses[a] ? st.analyses[a].path : null, d, RANGE);
  const pts = st.curves[d] || [], ctx = c.getContext("2d"), W = c.width, H = c.height;
  const px = ([t, v]) => [t * W, H / 2 - v / RANGE * H / 2];
  if (!pts.length) return;
  ctx.strokeStyle = "#ffffff"; ctx.lineWidth = 2; ctx.setLineDash([10, 6]); ctx.beginPath();
  pts.forEach((p, i) => { const [x, y] = px(p); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
  ctx.stroke(); ctx.setLineDash([]);
  for (const p of pts) { const [x, y] = px(p); dot(ctx, x, y, "#ffffff"); }
}
(function curveEditor() {
  const c = $("#curve");
  let drag = -1;
  const toTV = ev => { const [x, y] = canvasXY(c, ev); return [Math.min(1, Math.max(0, x)), (0.5 - y) * 2 * RANGE]; };
  const near = ev => {
    const [x, y] = canvasXY(c, ev), r = c.getBoundingClientRect();
    return (st.curves[curveDim()] || []).findIndex(([t, v]) =>
      Math.hypot((t - x) * r.width, (0.5 - v / RANGE / 2 - y) * r.height) < 12);
  };
  c.addEventListener("pointerdown", ev => {
    const pts = st.curves[curveDim()] = st.curves[curveDim()] || [];
    drag = near(ev);
    if (drag < 0) { pts.push(toTV(ev)); pts.sort((p, q) => p[0] - q[0]); drag = near(ev); showOps(); }
    c.setPointerCapture(ev.pointerId);
    drawCurve();
  });
  c.addEventListener("pointermove", ev => {
    if (drag < 0) return;
    const pts = st.curves[curveDim()];
    pts[drag] = toTV(ev);
    const moved = pts[drag];
    pts.sort((p, q) => p[0] - q[0]);
    drag = pts.indexOf(moved);
    drawCurve();
  });
  c.addEventListener("pointerup", () => { drag = -1; });
  c.addEventListener("dblclick", ev => {
    const i = near(ev);
    if (i >= 0) { st.curves[curveDim()].splice(i, 1); drawCurve(); showOps(); }
  });
})();
$("#curve-dim").addEventListener("change", drawCurve);
$("#curve-mode").addEventListener("change", showOps);
$("#curve-clear").addEventListener("click", () => { st.curves[curveDim()] = []; drawCurve(); showOps(); });

// -- the pad -----------------------------------------------------------------------------
(function pad() {
  const c = $("#pad");
  let t0 = 0, drawing = false;
  const pos = ev => canvasXY(c, ev).map(v => Math.min(1, Math.max(0, v)));
  c.addEventListener("pointerdown", ev => {
    drawing = true; t0 = performance.now();
    st.point = pos(ev); st.gesture = [[0, ...st.point]];
    c.setPointerCapture(ev.pointerId);
    drawPad(c, st.gesture, st.point);
  });
  c.addEventListener("pointermove", ev => {
    if (!drawing) return;
    st.gesture.push([performance.now() - t0, ...pos(ev)]);
    drawPad(c, st.gesture, st.point);
  });
  c.addEventListener("pointerup", () => {
    drawing = false;
    const T = st.gesture.length ? st.gesture[st.gesture.length - 1][0] : 0;
    if (st.gesture.length < 3 || T < 50) st.gesture = [];  // a click: a fixed point
    else st.gesture = st.gesture.map(([t, x, y]) => [Math.round(t / T * 1e4) / 1e4, x, y]);
    if (st.gesture.length) $("input[name=source][value=plane]").checked = true;
    drawPad(c, st.gesture, st.point);
  });
  drawPad(c, [], st.point);
})();

$("#upload-go").addEventListener("click", upload);
$("#render").addEventListener("click", render);
$$("[data-slot]").forEach((s, i) => s.addEventListener("change", () => { if (i === 0) showInput(); }));

api("/api/info").then(info => {
  st.latentDim = info.latent_dim || 0;
  $("#model").textContent = info.bundle ? `model ${info.bundle} · ${info.sample_rate} Hz` : "no bundle configured";
  const dims = Array.from({length: st.latentDim}, (_, d) => el("option", {value: d}, `${d}`));
  $("#op-bias-dim").replaceChildren(...dims.map(o => o.cloneNode(true)));
  $("#curve-dim").replaceChildren(...dims);
  drawCurve();
  for (const id of ["#out-spec", "#out-latent", "#in-spec", "#in-latent"]) {
    id.includes("spec") ? drawSpectrogram($(id), null) : drawLatent($(id), null);
  }
  return loadSounds();
}).catch(e => say($("#sound-msg"), e.message, true));
