// Canvas drawing for the playground: spectrograms, latent curves, the pad.
"use strict";
const COLORS = ["#e0a040", "#4fb3c8", "#c86fc8", "#6cc070", "#e06060", "#8f8fef", "#d8d070", "#60d0a0",
                "#f08c5a", "#5a9cf0", "#b0b0b0", "#f06aa0"];

// 0..1 -> a dark-to-bright ramp (black, violet, orange, pale yellow)
function heat(v) {
  const stops = [[12, 13, 16], [70, 30, 110], [200, 70, 60], [240, 170, 60], [255, 245, 200]];
  const x = Math.min(0.9999, Math.max(0, v)) * (stops.length - 1), i = Math.floor(x), f = x - i;
  return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
}

function drawSpectrogram(canvas, spec) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  ctx.fillStyle = "#0c0d10";
  ctx.fillRect(0, 0, W, H);
  if (!spec) return;
  const bytes = Uint8Array.from(atob(spec.data), c => c.charCodeAt(0));
  const img = ctx.createImageData(spec.columns, spec.bins);
  for (let c = 0; c < spec.columns; c++) {
    for (let b = 0; b < spec.bins; b++) {
      const [r, g, bl] = heat(bytes[c * spec.bins + b] / 255);
      const o = ((spec.bins - 1 - b) * spec.columns + c) * 4;
      img.data[o] = r; img.data[o + 1] = g; img.data[o + 2] = bl; img.data[o + 3] = 255;
    }
  }
  const tmp = document.createElement("canvas");
  tmp.width = spec.columns; tmp.height = spec.bins;
  tmp.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(tmp, 0, 0, W, H);
  label(ctx, `${fmt(spec.seconds, 2)} s · ${Math.round(spec.low_hz)} Hz – ${fmt(spec.high_hz / 1000, 1)} kHz (log)`, W);
}

function label(ctx, text, W) {
  ctx.font = "22px DejaVu Sans, sans-serif";
  ctx.fillStyle = "rgba(0,0,0,0.55)";
  const w = ctx.measureText(text).width;
  ctx.fillRect(W - w - 20, 6, w + 14, 30);
  ctx.fillStyle = "#e4e6ea";
  ctx.fillText(text, W - w - 13, 29);
}

// every dimension's curve; `highlight` drawn on top and thicker; y spans +-range std
function drawLatent(canvas, path, highlight = -1, range = 4) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  ctx.fillStyle = "#0c0d10";
  ctx.fillRect(0, 0, W, H);
  ctx.strokeStyle = "#2c3038";
  ctx.lineWidth = 1;
  for (const v of [-2, 0, 2]) {
    const y = H / 2 - v / range * H / 2;
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(W, y); ctx.stroke();
  }
  if (!path) return;
  const order = path.z.map((_, d) => d).filter(d => d !== highlight);
  if (highlight >= 0) order.push(highlight);
  for (const d of order) {
    const row = path.z[d], n = row.length;
    ctx.strokeStyle = COLORS[d % COLORS.length];
    ctx.globalAlpha = highlight < 0 || d === highlight ? 0.95 : 0.3;
    ctx.lineWidth = d === highlight ? 3 : 1.5;
    ctx.beginPath();
    row.forEach((v, i) => {
      const x = n > 1 ? i / (n - 1) * W : 0, y = H / 2 - Math.max(-range, Math.min(range, v)) / range * H / 2;
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
  ctx.globalAlpha = 1;
  label(ctx, `${path.latent_dim} dims · ${path.frames} frames · ±${range} std`, W);
}

function drawPad(canvas, gesture, point) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  ctx.fillStyle = "#0c0d10";
  ctx.fillRect(0, 0, W, H);
  ctx.strokeStyle = "#2c3038";
  for (let i = 1; i < 4; i++) {
    ctx.beginPath(); ctx.moveTo(i * W / 4, 0); ctx.lineTo(i * W / 4, H); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, i * H / 4); ctx.lineTo(W, i * H / 4); ctx.stroke();
  }
  ctx.font = "bold 30px DejaVu Sans, sans-serif";
  ctx.fillStyle = "#e0a040";
  // A (0,0) top left, B (1,0) top right, C (0,1) bottom left, D (1,1) bottom right
  ctx.fillText("A", 12, 38); ctx.fillText("B", W - 34, 38); ctx.fillText("C", 12, H - 14); ctx.fillText("D", W - 34, H - 14);
  if (gesture && gesture.length > 1) {
    ctx.strokeStyle = "#4fb3c8"; ctx.lineWidth = 4; ctx.beginPath();
    gesture.forEach(([, x, y], i) => i ? ctx.lineTo(x * W, y * H) : ctx.moveTo(x * W, y * H));
    ctx.stroke();
    const [, x0, y0] = gesture[0], [, x1, y1] = gesture[gesture.length - 1];
    dot(ctx, x0 * W, y0 * H, "#6cc070"); dot(ctx, x1 * W, y1 * H, "#e06060");
  } else if (point) {
    dot(ctx, point[0] * W, point[1] * H, "#4fb3c8");
  }
}

function dot(ctx, x, y, color) {
  ctx.fillStyle = color; ctx.beginPath(); ctx.arc(x, y, 10, 0, 2 * Math.PI); ctx.fill();
}
