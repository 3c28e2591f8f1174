// The minilrp playground page. It keeps the input pixels and the knob values, asks the server
// for an explanation after every change and draws what comes back. At most one explanation
// request is in flight: changes made meanwhile coalesce into one request with the latest
// settings, sent when the running one returns (the server coalesces too, per page: `client`).
// window.playground exposes the state and the raw numbers (for tests and the benchmark).
"use strict";

const $ = (id) => document.getElementById(id);
const pg = window.playground = {
  client: (crypto.randomUUID ? crypto.randomUUID() : String(Math.random())).slice(0, 36),
  seq: 0,
  options: null,      // /api/options of the current model
  pixels: null,       // Uint8Array, C*H*W, channel-major: the input
  knobs: {},          // method id -> {parameter name -> value}
  last: null,         // the last explanation shown (the server's JSON)
  lastRequest: null,  // the settings it answered
  curves: null,       // the last curves shown
  error: null,        // the last error message shown, or null
  shown: 0,           // explanations drawn so far
  timings: [],        // per explanation drawn: {ms: change -> drawn, server_ms, compute_ms}
};

// ------------------------------------------------------------------ talking to the server
async function api(path, options) {
  const r = await fetch(path, options);
  let body;
  try { body = await r.json(); } catch (e) { body = {error: `HTTP ${r.status}: the server's answer is not JSON`}; }
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function showError(message) {
  pg.error = message;
  $("error").textContent = message ? `Error: ${message}` : "";
  $("error").hidden = !message;
}

function b64bytes(text) {
  const s = atob(text), out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
function bytesb64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
function floats(f) { return new Float32Array(b64bytes(f.data).buffer); }
const fmt = (v) => (v === 0 ? "0" : Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(2) : v.toPrecision(4));

// ------------------------------------------------------------------ settings of a request
function methodSpec() { return pg.options.methods.find((m) => m.id === $("method").value); }

function settings() {
  const m = methodSpec();
  const params = {...pg.knobs[m.id]};
  const s = {model: $("model").value, pixels: bytesb64(pg.pixels), method: m.id, params,
             target: $("target").value === "" ? null : Number($("target").value)};
  if (m.kind === "rule") {
    s.pixel_rule = $("pixel_rule").value;
    if (s.pixel_rule === "zbox") Object.assign(params, pg.knobs["zbox"]);
  }
  if (m.kind !== "sa" && pg.options.maxpool.length) s.maxpool = $("maxpool").value;
  return s;
}

// ------------------------------------------------------------------ live explanations
let inflight = false, dirty = false, changedAt = 0;
pg.settled = () => !inflight && !dirty;  // nothing in flight, nothing waiting

function schedule() {
  changedAt = performance.now();
  dirty = true;
  if (!inflight) loop();
}

async function loop() {
  inflight = true;
  while (dirty) {
    dirty = false;
    const since = changedAt, s = settings();
    s.client = pg.client;
    s.seq = ++pg.seq;
    try {
      const out = await api("/api/explain", {method: "POST", headers: {"Content-Type": "application/json"},
                                             body: JSON.stringify(s)});
      if (out.superseded) continue;
      await draw(out, s);
      await new Promise((done) => requestAnimationFrame(done));  // the frame that shows it
      pg.timings.push({ms: performance.now() - since, server_ms: out.server_ms, compute_ms: out.compute_ms});
      $("status").textContent = `round trip ${(performance.now() - since).toFixed(0)} ms ` +
        `(server ${out.server_ms.toFixed(1)} ms, of which computing ${out.compute_ms.toFixed(1)} ms)`;
      showError(null);
      pg.shown++;
    } catch (e) {
      showError(e.message);
    }
  }
  inflight = false;
}

function setImage(img, src) {
  img.src = src;
  return img.decode().catch(() => {});
}

async function draw(out, s) {
  pg.last = out;
  pg.lastRequest = s;
  const classes = pg.options.classes;
  // probabilities
  const rows = out.probabilities.map((p, k) => {
    const cls = ["p", k === out.predicted ? "predicted" : "", k === out.target ? "target" : ""].join(" ");
    return `<div class="${cls}" data-class="${k}"><span class="name">${escapeHtml(classes[k])}</span>` +
           `<span class="bar"><div></div></span><span class="value">${p.toFixed(3)}</span></div>`;
  });
  $("probabilities").innerHTML = rows.join("");
  $("probabilities").querySelectorAll(".bar div").forEach((d, k) => { d.style.width = `${100 * out.probabilities[k]}%`; });
  // heatmap, overlay, colour bar
  const h = out.heatmap;
  pg.values = floats(h.values);
  const m = h.scale;
  $("bar-low").textContent = out.signed ? `−${fmt(m)}` : "0";
  $("bar-mid").textContent = out.signed ? "0" : fmt(m / 2);
  $("bar-high").textContent = `+${fmt(m)}`;
  const what = s.method.startsWith("sa:") ? s.method.slice(3) : "LRP relevance";
  $("heat-note").textContent = `${what} for class “${classes[out.target]}”` +
    (out.target === out.predicted ? " (predicted)" : "") +
    `: sum ${fmt(h.sum)}` + (out.signed ? ` (positive +${fmt(h.positive)}, negative ${fmt(h.negative)})` : "") +
    `; ${out.signed ? "red positive, blue negative, symmetric about zero" : "sequential from zero"}.`;
  // layers and ledger (LRP only)
  const lrp = Boolean(out.layers);
  $("layers-panel").hidden = !lrp;
  $("ledger-panel").hidden = !lrp;
  const pending = [setImage($("heatmap"), h.png), setImage($("overlay"), h.overlay), setImage($("bar"), h.colour_bar)];
  if (lrp) {
    $("layers").innerHTML = out.layers.map((l) =>
      `<figure data-index="${l.index}"><img alt="relevance at the input of layer ${l.index}">` +
      `<figcaption>layer ${l.index}: ${escapeHtml(l.layer)}<br>${escapeHtml(l.rule)}<br>` +
      `input ${l.shape.join("×")}, ΣR ${fmt(l.sum)}, max |R| ${fmt(l.scale)}</figcaption></figure>`).join("");
    $("layers").querySelectorAll("img").forEach((img, i) => pending.push(setImage(img, out.layers[i].png)));
    drawLedger(out.ledger);
  }
  await Promise.all(pending);
}

function drawLedger(rows) {
  const pn = rows.some((r) => "positive" in r);
  const head = ["layer", "rule", "entering", "leaving", "bias", "stabiliser", "dropped"].concat(pn ? ["positive", "negative"] : []);
  const body = rows.map((r) => `<tr class="${r.rule === "pass" ? "pass" : ""}"><td>${r.index} ${escapeHtml(r.layer)}</td>` +
    `<td>${escapeHtml(r.rule)}</td>` +
    ["entering", "leaving", "bias", "stabiliser", "dropped"].concat(pn ? ["positive", "negative"] : [])
      .map((k) => `<td>${k in r ? fmt(r[k]) : ""}</td>`).join("") + "</tr>");
  $("ledger").innerHTML = `<thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody>${body.join("")}</tbody>`;
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function hover(e) {
  if (!pg.values || !pg.options) return;
  const [, H, W] = pg.options.input_shape, r = e.target.getBoundingClientRect();
  const col = Math.floor((e.clientX - r.left) / r.width * W), row = Math.floor((e.clientY - r.top) / r.height * H);
  if (row < 0 || row >= H || col < 0 || col >= W) return;
  $("hover").textContent = `pixel (row ${row}, column ${col}): ${fmt(pg.values[row * W + col])}`;
}

// ------------------------------------------------------------------ the canvas
const canvas = $("canvas"), ctx = canvas.getContext("2d");
let erasing = false, last = null;

function paintCanvas() {
  const [C, H, W] = pg.options.input_shape, img = ctx.createImageData(W, H);
  for (let i = 0; i < H * W; i++) {
    for (let c = 0; c < 3; c++) img.data[4 * i + c] = pg.pixels[(C === 3 ? c : 0) * H * W + i];
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function gridPoint(e) {
  const [, H, W] = pg.options.input_shape, r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) / r.width * W, (e.clientY - r.top) / r.height * H];
}

function dab(x, y) {  // a soft round brush at grid point (x, y); pen raises pixels, eraser lowers
  const [C, H, W] = pg.options.input_shape, radius = Number($("brush").value);
  for (let row = Math.max(0, Math.floor(y - radius - 1)); row <= Math.min(H - 1, Math.ceil(y + radius)); row++) {
    for (let col = Math.max(0, Math.floor(x - radius - 1)); col <= Math.min(W - 1, Math.ceil(x + radius)); col++) {
      const d = Math.hypot(col + 0.5 - x, row + 0.5 - y), v = Math.max(0, Math.min(1, radius + 0.5 - d)) * 255;
      for (let c = 0; c < C; c++) {
        const i = c * H * W + row * W + col;
        pg.pixels[i] = erasing ? Math.min(pg.pixels[i], 255 - v) : Math.max(pg.pixels[i], v);
      }
    }
  }
}

function stroke(e) {
  const p = gridPoint(e);
  const from = last || p, n = Math.max(1, Math.ceil(Math.hypot(p[0] - from[0], p[1] - from[1]) / 0.25));
  for (let k = 1; k <= n; k++) dab(from[0] + (p[0] - from[0]) * k / n, from[1] + (p[1] - from[1]) * k / n);
  last = p;
  paintCanvas();
  schedule();
}

canvas.addEventListener("pointerdown", (e) => { canvas.setPointerCapture(e.pointerId); last = null; stroke(e); });
canvas.addEventListener("pointermove", (e) => { if (canvas.hasPointerCapture(e.pointerId)) stroke(e); });
canvas.addEventListener("pointerup", () => { last = null; });
$("pen").onclick = () => { erasing = false; $("pen").classList.add("active"); $("eraser").classList.remove("active"); };
$("eraser").onclick = () => { erasing = true; $("eraser").classList.add("active"); $("pen").classList.remove("active"); };
$("clear").onclick = () => { pg.pixels.fill(0); $("sample-label").textContent = ""; paintCanvas(); schedule(); };

// ------------------------------------------------------------------ inputs: samples, uploads
async function loadSample(index) {
  try {
    const s = await api(`/api/sample?model=${encodeURIComponent($("model").value)}&index=${encodeURIComponent(index)}`);
    pg.pixels = b64bytes(s.pixels);
    $("sample").value = s.index;
    $("sample-label").textContent = `Fashion-MNIST test image #${s.index}, true class: ${s.label_name}`;
    $("upload-note").textContent = "";
    paintCanvas();
    schedule();
  } catch (e) { showError(e.message); }
}
$("load-sample").onclick = () => loadSample($("sample").value);
$("sample").onchange = () => loadSample($("sample").value);
$("random-sample").onclick = () => loadSample(Math.floor(Math.random() * pg.options.samples));

$("upload").onchange = async () => {
  const file = $("upload").files[0];
  if (!file) return;
  try {
    const out = await api(`/api/image?model=${encodeURIComponent($("model").value)}&name=${encodeURIComponent(file.name)}`,
                          {method: "POST", headers: {"Content-Type": "application/octet-stream"}, body: file});
    pg.pixels = b64bytes(out.pixels);
    $("upload-note").textContent = out.note;
    $("sample-label").textContent = "";
    paintCanvas();
    schedule();
  } catch (e) { showError(e.message); }
  $("upload").value = "";
};

// ------------------------------------------------------------------ the knobs
function knob(spec, values, onchange) {
  // A slider with a number field beside it (floats and ints with a slider range), a
  // checkbox (bools), or a number field alone (z^B bounds may stay empty: the model's range).
  const div = document.createElement("div");
  div.className = "knob";
  div.dataset.name = spec.name;
  div.title = spec.help || "";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = spec.name;
  div.append(name);
  if (spec.kind === "bool") {
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = spec.name;
    box.checked = values[spec.name];
    box.onchange = () => { values[spec.name] = box.checked; onchange(); };
    name.prepend(box);
    return div;
  }
  const field = document.createElement("input");
  field.type = "number";
  field.name = spec.name;
  field.step = "any";
  if (!spec.slider) {  // a number field alone: z^B bounds (empty = the model's range), seeds
    if (spec.kind === "bound") {
      field.placeholder = `model: ${pg.options[spec.name === "low" ? "input_low" : "input_high"].map(fmt).join(", ")}`;
    }
    field.value = values[spec.name] === null ? "" : values[spec.name];
    field.oninput = () => { values[spec.name] = field.value === "" ? null : Number(field.value); onchange(); };
    div.append(field);
    return div;
  }
  field.value = values[spec.name];
  const slider = document.createElement("input");
  slider.type = "range";
  slider.name = spec.name;
  const [lo, hi] = spec.slider, log = spec.scale === "log";
  const toValue = (p) => (log ? Math.exp(Math.log(lo) + p / 1000 * (Math.log(hi) - Math.log(lo))) : lo + p / 1000 * (hi - lo));
  const toPos = (v) => (log ? (Math.log(Math.max(v, lo)) - Math.log(lo)) / (Math.log(hi) - Math.log(lo)) * 1000 : (v - lo) / (hi - lo) * 1000);
  slider.min = 0; slider.max = 1000; slider.step = spec.kind === "int" ? 1000 / (hi - lo) : 1;
  slider.value = Math.round(toPos(values[spec.name]));
  slider.oninput = () => {
    const v = toValue(Number(slider.value));
    values[spec.name] = spec.kind === "int" ? Math.round(v) : Number(v.toPrecision(3));
    field.value = values[spec.name];
    onchange();
  };
  field.oninput = () => {
    values[spec.name] = field.value === "" ? null : Number(field.value);  // the server checks it
    if (Number.isFinite(values[spec.name])) slider.value = Math.round(toPos(values[spec.name]));
    onchange();
  };
  div.append(slider, field);
  if (spec.name === "alpha") {
    const beta = document.createElement("span");
    beta.className = "derived";
    const show = () => { beta.textContent = `beta = alpha − 1 = ${fmt(values.alpha - 1)}`; };
    show();
    div.append(beta);
    const inner = onchange;
    onchange = () => { show(); inner(); };
  }
  return div;
}

function defaults(params) { return Object.fromEntries(params.map((p) => [p.name, p.default])); }

function buildKnobs() {
  const m = methodSpec();
  pg.knobs[m.id] = pg.knobs[m.id] || defaults(m.params);
  $("params").replaceChildren(...m.params.map((p) => knob(p, pg.knobs[m.id], schedule)));
  $("pixel-rule-field").hidden = m.kind !== "rule";
  const zbox = m.kind === "rule" && $("pixel_rule").value === "zbox";
  pg.knobs["zbox"] = pg.knobs["zbox"] || {low: null, high: null};
  $("bounds").replaceChildren(...(zbox ? ["low", "high"].map((name) =>
    knob({name, kind: "bound", help: `z^B ${name === "low" ? "lower" : "upper"} bound in the network's input space`},
         pg.knobs["zbox"], schedule)) : []));
  $("maxpool-field").hidden = m.kind === "sa" || !pg.options.maxpool.length;
  $("method-note").textContent = m.kind === "rule" ? "One rule on every dense and conv layer (and optionally another at the pixel layer)."
    : m.kind === "preset" ? "A composite: a rule per layer type, as its name says (see the ledger for which)."
    : m.signed ? "A gradient method, signed: red positive, blue negative." : "A gradient method, never negative: sequential colours from zero.";
}

$("method").onchange = () => { try { buildKnobs(); schedule(); } catch (e) { showError(e.message); } };
$("pixel_rule").onchange = () => { try { buildKnobs(); schedule(); } catch (e) { showError(e.message); } };
$("maxpool").onchange = schedule;
$("target").onchange = schedule;
$("heatmap").addEventListener("mousemove", hover);
$("overlay").addEventListener("mousemove", hover);

// ------------------------------------------------------------------ the perturbation curves
$("run-curves").onclick = async () => {
  const s = settings();
  s.perturbation = $("perturbation").value;
  $("run-curves").disabled = true;
  $("curves-status").textContent = "computing…";
  try {
    const out = await api("/api/curves", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(s)});
    $("curves").hidden = false;
    await setImage($("curves"), out.png);
    $("aopc").innerHTML = "<thead><tr><th>ordering</th><th>AOPC</th></tr></thead><tbody>" +
      Object.entries(out.aopc).map(([o, v]) => `<tr data-ordering="${o}"><td>${o}</td><td>${fmt(v)}</td></tr>`).join("") +
      `</tbody>`;
    $("curves-status").textContent = `${out.n_regions} regions of ${out.region_size}x${out.region_size}, ` +
      `class “${pg.options.classes[out.target]}”`;
    pg.curves = out;  // last: tests wait for these, then read the picture and the table
    pg.curvesRequest = s;
    showError(null);
  } catch (e) {
    $("curves-status").textContent = "";
    showError(e.message);
  }
  $("run-curves").disabled = false;
};

// ------------------------------------------------------------------ models
async function selectModel(name) {
  const o = await api(`/api/options?model=${encodeURIComponent(name)}`);
  pg.options = o;
  const [C, H, W] = o.input_shape;
  canvas.width = W;
  canvas.height = H;
  const groups = {};
  for (const m of o.methods) (groups[m.group] = groups[m.group] || []).push(m);
  const previous = $("method").value || "preset:EpsilonGammaBox";
  $("method").innerHTML = Object.entries(groups).map(([g, ms]) =>
    `<optgroup label="${escapeHtml(g)}">${ms.map((m) => `<option value="${m.id}">${escapeHtml(m.label)}</option>`).join("")}</optgroup>`).join("");
  $("method").value = o.methods.some((m) => m.id === previous) ? previous : o.methods[0].id;
  $("target").innerHTML = `<option value="">predicted class</option>` +
    o.classes.map((c, k) => `<option value="${k}">${k}: ${escapeHtml(c)}</option>`).join("");
  $("perturbation").innerHTML = Object.entries(o.perturbations).map(([k, v]) =>
    `<option value="${k}">${escapeHtml(k)}: ${escapeHtml(v)}</option>`).join("");
  $("sample-row").hidden = !o.samples;
  $("sample").max = o.samples - 1;
  buildKnobs();
  pg.pixels = new Uint8Array(C * H * W);
  $("curves").hidden = true;
  $("aopc").innerHTML = "";
  if (o.samples) await loadSample(Number($("sample").value) || 0);
  else { paintCanvas(); schedule(); }
}

$("model").onchange = () => selectModel($("model").value).catch((e) => showError(e.message));

(async () => {
  try {
    const m = await api("/api/models");
    $("model").innerHTML = m.models.map((n) => `<option value="${escapeHtml(n)}">${escapeHtml(n)}</option>`).join("");
    $("model").value = m.models.includes("fmnist-cnn") ? "fmnist-cnn" : m.default;
    await selectModel($("model").value);
  } catch (e) { showError(e.message); }
})();
