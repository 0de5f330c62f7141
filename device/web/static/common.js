// Shared by both pages: tiny DOM and fetch helpers, no framework.
"use strict";
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(path, options = {}) {
  const r = await fetch(path, options);
  const body = await r.json().catch(() => ({error: `HTTP ${r.status}`}));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function say(target, text, isError = false) {
  target.textContent = text;
  target.classList.toggle("err", isError);
}

function fmt(v, digits = 2) {
  return (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toFixed(digits);
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
}

// A list of names with one selected (presets, models, sounds).
function fillList(box, names, selected, onPick) {
  box.replaceChildren(...names.map(n => {
    const d = el("div", {"data-name": n, onclick: () => { fillList(box, names, n, onPick); onPick(n); }}, n);
    if (n === selected) d.classList.add("sel");
    return d;
  }));
  if (!names.length) box.append(el("div", {class: "hint"}, "(none)"));
}
