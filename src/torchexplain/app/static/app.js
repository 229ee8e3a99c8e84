// torchexplain app: plain JavaScript, no build step, nothing from the network.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { info: null, image: null, job: null, result: null, pixels: null };

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body?.error || `${response.status} ${response.statusText}`);
  return body;
}
const post = (path, body) => api(path, { method: "POST", headers: { "content-type": "application/json" },
                                          body: JSON.stringify(body) });
function say(text, error = false) { $("status").textContent = text; $("status").className = error ? "error" : ""; }

async function start() {
  state.info = await api("/api/info");
  for (const m of state.info.models) $("model").add(new Option(m.name, m.name));
  $("classnames").replaceChildren(...(state.info.models[0].class_names || []).map((n) => new Option(n)));
  for (const id of state.info.samples) {
    const img = new Image(); img.src = `/api/images/${id}.png`; img.alt = id; img.dataset.id = id;
    img.onclick = () => choose(id); $("samples").append(img);
  }
  for (const m of state.info.methods) {
    const row = document.createElement("div");
    const box = Object.assign(document.createElement("input"), { type: "checkbox", value: m.name, id: `m-${m.name}` });
    const label = Object.assign(document.createElement("label"), { htmlFor: box.id, textContent: ` ${m.name}` });
    label.prepend(box); row.append(label);
    const fields = document.createElement("fieldset"); fields.hidden = true; fields.dataset.method = m.name;
    fillFields(fields, m.fields);
    box.onchange = () => { fields.hidden = !box.checked; };
    row.append(fields); $("methods").append(row);
  }
  $("file").onchange = () => $("file").files[0] && upload($("file").files[0]);
  document.body.ondragover = (e) => e.preventDefault();
  document.body.ondrop = (e) => { e.preventDefault(); if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]); };
  $("explain").onclick = explain;
  $("evaluate").onclick = evaluate;
  $("cancel").onclick = () => state.job && api(`/api/jobs/${state.job}`, { method: "DELETE" });
  $("opacity").oninput = $("sign").onchange = draw;
  $("model").onchange = switchModel; $("layer").onchange = showLayer;
  $("showtree").onclick = showTree; $("treesearch").onchange = () => findInTree($("treesearch").value);
  let treeSize = 14;
  const zoom = (k) => { treeSize = Math.max(8, Math.min(28, treeSize + k)); $("tree").style.setProperty("--tree-size",
    `${treeSize}px`); };
  $("zoomin").onclick = () => zoom(2); $("zoomout").onclick = () => zoom(-2);
  await loadLayers();
  await loadRuns();
}

function fillFields(fieldset, fields) {  // one text input per argument, holding its default as JSON
  fieldset.replaceChildren(...Object.entries(fields).map(([key, value]) => {
    const input = Object.assign(document.createElement("input"), { type: "text", name: key,
      value: JSON.stringify(value) });
    const l = document.createElement("label"); l.append(`${key} `, input);
    return l;
  }));
}

let switches = 0;
async function switchModel() {  // the methods' defaults and class names are the new model's; its results are gone
  const name = $("model").value, mine = ++switches;
  try {
    const info = await api(`/api/info?model=${encodeURIComponent(name)}`);
    if (mine !== switches) return;  // the user switched again meanwhile: that switch fills the page
    for (const m of info.methods) fillFields($("methods").querySelector(`fieldset[data-method="${m.name}"]`), m.fields);
    const model = info.models.find((m) => m.name === name);
    $("classnames").replaceChildren(...(model.class_names || []).map((n) => new Option(n)));
    state.result = null; $("readout").textContent = ""; $("treeline").textContent = "";
    for (const id of ["maps", "ranking", "curves", "layerview", "tree"]) $(id).replaceChildren();
    await loadLayers();
    if (state.image) await choose(state.image);
  } catch (err) { say(err.message, true); }
}

async function upload(file) {
  try {
    const { id } = await api("/api/images", { method: "POST", body: file, headers: { "x-filename": file.name } });
    await choose(id);
  } catch (err) { say(err.message, true); }
}

async function choose(id) {
  state.image = id;
  for (const img of $("samples").children) img.classList.toggle("chosen", img.dataset.id === id);
  $("picture").src = `/api/images/${id}.png`;
  await $("picture").decode();
  try {
    const { classes } = await post("/api/predict", { model: $("model").value, image: id, k: 5 });
    $("classes").replaceChildren(...classes.map((c) =>
      Object.assign(document.createElement("li"), { textContent: `${c.name}: ${(100 * c.probability).toFixed(2)}%` })));
    $("target").replaceChildren(new Option("top class", "top1"), ...classes.map((c) => new Option(c.name, c.index)));
    $("explain").disabled = $("evaluate").disabled = $("showtree").disabled = false; say("");
    if ($("layer").value) showLayer();
  } catch (err) { say(err.message, true); }
}

function chosenMethods() {
  const methods = [], args = {};
  for (const box of $("methods").querySelectorAll("input[type=checkbox]:checked")) {
    methods.push(box.value);
    const values = {};
    for (const input of $("methods").querySelector(`fieldset[data-method="${box.value}"]`).querySelectorAll("input"))
      values[input.name] = JSON.parse(input.value);
    args[box.value] = values;
  }
  return { methods, args };
}

function request() {
  const { methods, args } = chosenMethods();  // throws on a field that is not JSON
  const target = $("targettext").value.trim() || $("target").value;  // typed: a class name or an index
  return { model: $("model").value, image: state.image, methods, target, arguments: args };
}

async function runJob(path, body) {  // POST a job, show its progress until it ends; its result
  let job = await post(path, body);
  state.job = job.id; $("cancel").hidden = false; $("progress").hidden = false;
  try {
    while (job.state === "running") {
      $("progress").max = job.total; $("progress").value = job.done;
      say(`running ${job.step} (${job.done}/${job.total})`);
      job = await api(`/api/jobs/${job.id}?wait=2`);  // answers as soon as the job moves on
    }
  } finally { $("cancel").hidden = true; $("progress").hidden = true; }
  if (job.state !== "done") throw new Error(job.state === "cancelled" ? "cancelled" : job.error);
  return job;
}

async function explain() {
  const pressed = performance.now();
  try {
    const job = await runJob("/api/explain", request());
    await Promise.all(job.result.methods.map(async (m) => {  // the maps, as float32 bytes
      const response = await fetch(`/api/jobs/${job.id}/${m.name}.f32`);
      m.values = new Float32Array(await response.arrayBuffer());
    }));
    state.result = job.result; state.mapsJob = job.id; draw();
    const ms = performance.now() - pressed;
    document.body.dataset.lastExplainMs = ms.toFixed(1);
    say(`done in ${job.seconds.toFixed(2)} s (${ms.toFixed(0)} ms in the page)`);
  } catch (err) { say(err.message, true); }
}

async function evaluate() {
  try {
    const job = await runJob("/api/evaluate", { ...request(), metrics: ["deletion", "insertion", "infidelity",
                                                                         "sparseness"] });
    showRanking(job.result);
    say(`evaluated in ${job.seconds.toFixed(2)} s`);
  } catch (err) { say(err.message, true); }
}

function showRanking(result) {
  const t = result.table, arrow = (m) => ({ true: " ↑", false: " ↓" })[t.higher_is_better[m]] || "";
  const head = document.createElement("tr");
  head.append(...["method", ...t.metrics.map((m) => m + arrow(m)), "seconds"].map((text) =>
    Object.assign(document.createElement("th"), { textContent: text })));
  const rows = [...t.rows].sort((a, b) => a[`${t.metrics[0]}_rank`] - b[`${t.metrics[0]}_rank`]).map((r) => {
    const tr = document.createElement("tr"); tr.dataset.method = r.method;
    tr.append(...[r.method, ...t.metrics.map((m) => `${r[m] === null ? "n/a" : r[m].toPrecision(3)} (#${r[`${m}_rank`]})`),
      r.seconds.toFixed(3)].map((text) => Object.assign(document.createElement("td"), { textContent: text })));
    return tr;
  });
  $("ranking").replaceChildren(head, ...rows);
  const charts = Object.entries(result.curves).map(([metric, curves]) => curveChart(metric, curves));
  $("curves").replaceChildren(...charts);
}

function curveChart(metric, curves) {  // an SVG line per method: probability against the fraction of features
  const ns = "http://www.w3.org/2000/svg", w = 260, h = 160, pad = 24;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h); svg.dataset.metric = metric;
  const hues = [0, 210, 120, 30, 280, 180, 330, 60];
  const title = document.createElementNS(ns, "text");
  title.setAttribute("x", pad); title.setAttribute("y", 14); title.textContent = `${metric}: probability`;
  svg.append(title);
  Object.entries(curves).forEach(([method, ys], k) => {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", ys.map((y, i) =>
      `${pad + (w - 2 * pad) * i / (ys.length - 1)},${h - pad - (h - 2 * pad) * y}`).join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", `hsl(${hues[k % hues.length]} 70% 45%)`);
    line.dataset.method = method;
    const label = document.createElementNS(ns, "title"); label.textContent = method; line.append(label);
    const key = document.createElementNS(ns, "text");
    key.setAttribute("x", w - pad); key.setAttribute("y", 30 + 13 * k); key.setAttribute("text-anchor", "end");
    key.setAttribute("fill", line.getAttribute("stroke")); key.setAttribute("font-size", "11");
    key.textContent = method;
    svg.append(line, key);
  });
  return svg;
}

async function loadLayers() {
  const { layers } = await api(`/api/layers?model=${encodeURIComponent($("model").value)}`);
  $("layer").replaceChildren(new Option("(choose a layer)", ""), ...layers.map((l) =>
    new Option(`${"\u00a0\u00a0".repeat(l.depth)}${l.name} (${l.type})`, l.name)));
}

function grid(title, block, signed) {  // one small canvas per map, each on its own scale
  const section = document.createElement("div"), [h, w] = block.shape;
  section.append(Object.assign(document.createElement("h3"), { textContent: title }));
  for (const values of block.values) {
    const canvas = Object.assign(document.createElement("canvas"), { width: w, height: h });
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h);
    const low = Math.min(...values), high = Math.max(...values), span = high - low || 1;
    for (let i = 0; i < h * w; i++) {
      const v = (values[i] - low) / span * 255;
      img.data.set([v, v, v, 255], 4 * i);
    }
    ctx.putImageData(img, 0, 0); section.append(canvas);
  }
  return section;
}

async function showLayer() {
  const layer = $("layer").value;
  if (!layer || !state.image) return;
  try {
    const view = await post("/api/layer", { model: $("model").value, image: state.image, layer,
                                            target: $("target").value });
    const parts = [];
    const maps = view.feature_maps;
    parts.push(maps.error ? Object.assign(document.createElement("p"), { textContent: maps.error })
      : grid(`feature maps of ${layer} (${maps.values.length} shown)`, maps));
    if (view.filters) parts.push(grid(`filters of ${layer}, each scaled to [0, 1]`, view.filters));
    const cam = view.grad_cam, section = document.createElement("div");
    section.append(Object.assign(document.createElement("h3"), { textContent: `Grad-CAM at ${layer}` }));
    if (cam.error) section.append(cam.error);
    else {
      const [h, w] = cam.shape, canvas = Object.assign(document.createElement("canvas"), { width: w, height: h,
                                                                                             className: "cam" });
      const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h);
      for (let i = 0; i < h * w; i++) img.data.set([...color(cam.values[i] / (cam.vmax || 1)), 255], 4 * i);
      ctx.putImageData(img, 0, 0); section.append(canvas);
    }
    parts.push(section);
    $("layerview").replaceChildren(...parts);
    $("layerview").dataset.layer = layer;
  } catch (err) { say(err.message, true); }
}

async function showTree() {
  try {
    const tree = await post("/api/tree", { model: $("model").value, image: state.image });
    $("treeline").textContent = tree.line;
    $("tree").innerHTML = tree.html;  // the server's outline (names escaped there); tree.js opens nodes
  } catch (err) { say(err.message, true); }
}

function findInTree(query) {  // open the path from the root to the first class whose name has ``query``
  const block = $("tree").querySelector("script[type='application/json']");
  if (!block || !query) return;
  const t = JSON.parse(block.textContent), q = query.toLowerCase(), parent = {};
  t.children.forEach((kids, n) => kids.forEach((c) => { parent[c] = n; }));
  const names = t.names.map((n) => String(n).toLowerCase());
  let found = names.indexOf(q);
  if (found < 0) found = names.findIndex((n) => n.includes(q));
  if (found < 0) { say(`no class or node named like "${query}"`, true); return; }
  const path = [found];
  while (parent[path[0]] !== undefined) path.unshift(parent[path[0]]);
  const outline = $("tree").querySelector(".nbdt");
  for (const n of path.slice(0, -1)) {
    const li = outline.querySelector(`li[data-node="${n}"]`), list = li?.querySelector(":scope > ul");
    if (li && (!list || list.hidden)) li.querySelector(":scope > .nbdt-toggle")?.click();
  }
  outline.querySelectorAll(".found").forEach((li) => li.classList.remove("found"));
  const target = outline.querySelector(`li[data-node="${found}"]`);
  if (target) { target.classList.add("found"); target.scrollIntoView({ block: "center" }); say(""); }
}

function color(v) {  // diverging, centred at zero: blue (-1) .. white (0) .. red (+1)
  const t = Math.max(-1, Math.min(1, v));
  return t >= 0 ? [255, 255 * (1 - t), 255 * (1 - t)] : [255 * (1 + t), 255 * (1 + t), 255];
}

function shown(v, sign) {
  if (sign === "positive") return Math.max(v, 0);
  if (sign === "negative") return Math.min(v, 0);
  if (sign === "absolute") return Math.abs(v);
  return v;
}

function mapCanvas(m, picture, alpha, sign) {  // a map over the picture's grey (or alone), centred at zero
  const [h, w] = m.shape, canvas = Object.assign(document.createElement("canvas"), { width: w, height: h });
  const ctx = canvas.getContext("2d");
  if (picture) ctx.drawImage(picture, 0, 0, w, h);
  const base = picture ? ctx.getImageData(0, 0, w, h) : null, out = ctx.createImageData(w, h), scale = m.vmax || 1;
  for (let i = 0; i < h * w; i++) {
    const c = color(shown(m.values[i], sign) / scale);
    const grey = base ? base.data[4 * i] * 0.3 + base.data[4 * i + 1] * 0.59 + base.data[4 * i + 2] * 0.11 : 255;
    const a = base ? alpha : 1;
    for (let k = 0; k < 3; k++) out.data[4 * i + k] = (1 - a) * grey + a * c[k];
    out.data[4 * i + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  canvas.dataset.method = m.name;
  return canvas;
}

function draw() {
  if (!state.result) return;
  const alpha = parseFloat($("opacity").value), sign = $("sign").value;
  const figures = state.result.methods.map((m) => {
    const canvas = mapCanvas(m, $("picture"), alpha, sign), [h, w] = m.shape;
    canvas.onmousemove = (e) => {
      const x = Math.floor(e.offsetX / canvas.clientWidth * w), y = Math.floor(e.offsetY / canvas.clientHeight * h);
      $("readout").textContent = state.result.methods.map((r) =>
        `${r.name} ${r.values[y * r.shape[1] + x].toPrecision(3)}`).join(" | ") + ` at (${x}, ${y})`;
    };
    const caption = document.createElement("figcaption");
    caption.textContent = `${m.name} · ${(1000 * m.seconds).toFixed(0)} ms` +
      (m.delta === null ? "" : ` · delta ${m.delta.toPrecision(3)}`);
    const png = Object.assign(document.createElement("a"), { href: "#", textContent: " .png", download: `${m.name}.png` });
    png.onclick = () => { png.href = canvas.toDataURL("image/png"); };  // the overlay as drawn
    caption.append(" ·", png,
      Object.assign(document.createElement("a"), { href: `/api/jobs/${state.mapsJob}/${m.name}.npy`,
                                                   textContent: " .npy", download: `${m.name}.npy` }),
      Object.assign(document.createElement("a"), { href: `/api/jobs/${state.mapsJob}`, textContent: " .json",
                                                   download: "explanation.json" }));
    const figure = document.createElement("figure"); figure.append(canvas, caption);
    return figure;
  });
  $("maps").replaceChildren(...figures);
  $("maps").dataset.target = state.result.target.name;
}

async function loadRuns() {
  const { runs } = await api("/api/runs");
  $("runs-section").hidden = !runs.length;
  $("run").replaceChildren(...runs.map((r) => new Option(`${r.name} (${r.kind})`, r.id)));
  $("run").onchange = showRun;
  for (const id of ["runfilter", "runpredicted", "runmin", "runmetric", "runmetricmin"]) $(id).oninput = filterRun;
  if (runs.length) await showRun();
}

async function showRun() {
  const { methods, rows } = await api(`/api/runs/${$("run").value}/rows`);
  const columns = ["id", "class", "predicted", "probability", ...methods.map((m) => `${m}/total`)];
  const head = document.createElement("tr");
  head.append(...columns.map((c) => Object.assign(document.createElement("th"), { textContent: c })));
  const body = rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.row = r.row; tr.dataset.class = r.class; tr.dataset.probability = r.probability;
    tr.dataset.predicted = r.predicted;
    for (const m of methods) tr.dataset[`total_${m}`] = r[`${m}/total`];
    tr.append(...columns.map((c) => Object.assign(document.createElement("td"), {
      textContent: typeof r[c] === "number" && !Number.isInteger(r[c]) ? r[c].toPrecision(4) : r[c] })));
    tr.onclick = () => showRunRow(r.row);
    return tr;
  });
  $("runrows").replaceChildren(head, ...body);
  $("runmetric").replaceChildren(...methods.map((m) => new Option(`${m}/total`, m)));
  filterRun();
}

function filterRun() {  // rows of the class and prediction typed (or any), at least the probability and total given
  const cls = $("runfilter").value.trim(), predicted = $("runpredicted").value.trim();
  const low = parseFloat($("runmin").value) || 0, metric = $("runmetric").value;
  const metricLow = parseFloat($("runmetricmin").value);
  for (const tr of $("runrows").querySelectorAll("tr[data-row]"))
    tr.hidden = (cls && tr.dataset.class !== cls) || (predicted && tr.dataset.predicted !== predicted) ||
      parseFloat(tr.dataset.probability) < low ||
      (!Number.isNaN(metricLow) && metric && parseFloat(tr.dataset[`total_${metric}`]) < metricLow);
}

async function showRunRow(row) {
  const { maps } = await api(`/api/runs/${$("run").value}/rows/${row}`);
  $("runmaps").replaceChildren(...Object.entries(maps).map(([name, m]) => {
    const figure = document.createElement("figure");
    figure.append(mapCanvas({ ...m, name }, null, 1, $("sign").value),
                  Object.assign(document.createElement("figcaption"), { textContent: `${name} · row ${row}` }));
    return figure;
  }));
  $("runmaps").dataset.row = row;
}

start().catch((err) => say(err.message, true));
