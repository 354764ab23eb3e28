// karyosearch page: plain JavaScript against the server's JSON API (no build step).
"use strict";

const CLASSES = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14",
  "15", "16", "17", "18", "19", "20", "21", "22", "X", "Y"];
const IMAGE_RE = /\.(bmp|png|tif|tiff|jpe?g)$/i;
const state = { card: null, cell: null, cellName: null };

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function status(message, kind = "") {
  const box = $("status");
  box.hidden = !message;
  box.textContent = message || "";
  box.className = "status " + kind;
}

async function api(url, options = {}) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error("the server cannot be reached (" + err.message + ")");
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("application/json") ? await response.json() : null;
  if (!response.ok) {
    const error = new Error((body && body.error) || response.status + " " + response.statusText);
    error.body = body;
    throw error;
  }
  return body;
}

// -- header --------------------------------------------------------------------------------

async function loadCard() {
  try {
    const card = await api("/api/index");
    state.card = card;
    $("index-info").textContent =
      `archive: ${card.count.toLocaleString()} chromosomes · ${card.arch}, ${card.image_size} px · ` +
      `model ${card.model_fingerprint.slice(0, 12)} · ${card.writes ? "writes on" : "read-only"}`;
    $("index-info").title = card.archive_note || "";  // what the archive call chose, in words
  } catch (err) {
    $("index-info").textContent = "server not reachable: " + err.message;
  }
}

// -- files in: inputs and drops ------------------------------------------------------------

function readEntries(reader) {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}

async function filesOfEntry(entry, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push(file);
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await readEntries(reader);
      if (!batch.length) break;
      for (const e of batch) await filesOfEntry(e, out);
    }
  }
}

async function droppedFiles(event) {
  const items = [...(event.dataTransfer.items || [])];
  const entries = items.map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  let folder = null;
  if (!entries.length) return { files: [...event.dataTransfer.files], folder };
  const files = [];
  for (const entry of entries) {
    if (entry.isDirectory && !folder) folder = entry.name;
    await filesOfEntry(entry, files);
  }
  return { files, folder };
}

function usable(files) {
  return files.filter((f) => !f.name.startsWith(".") && (IMAGE_RE.test(f.name) || /\.zip$/i.test(f.name)));
}

function setupDrop(zone, handler) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const { files, folder } = await droppedFiles(e);
    handler(files, folder);
  });
}

function folderOf(files) {
  const rel = files.find((f) => f.webkitRelativePath);
  return rel ? rel.webkitRelativePath.split("/")[0] : null;
}

// -- single crops --------------------------------------------------------------------------

async function queryCrops(files) {
  files = usable(files);
  if (!files.length) return status("No image files among those dropped (.png, .bmp, .tif, .jpg).", "error");
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  status(`Naming ${files.length} crop(s)…`, "busy");
  $("cell-view").hidden = true;
  try {
    const body = await api("/api/query?k=9", { method: "POST", body: form });
    renderCrops(body);
    status(`${body.results.length} crop(s) named` +
      (body.errors.length ? `; ${body.errors.length} file(s) could not be read` : "") + ".");
  } catch (err) {
    status(err.message, "error");
    if (err.body && err.body.errors) showErrors($("crop-errors"), err.body.errors);
  }
}

function agreeing(label, neighbours) {
  return neighbours.filter((n) => n.label === label).length;
}

function renderCrops(body) {
  const grid = $("crop-grid");
  grid.replaceChildren();
  body.results.forEach((r, i) => {
    // the call (proxies and the archive's labelled neighbours), else the proxies alone
    const p = r.call || r.predicted || { label: r.knn_label || "?", score: 0, margin: 0 };
    const unit = r.call ? "p" : "cos";
    const agree = agreeing(p.label, r.neighbours);
    const doubtful = r.knn_label !== p.label || p.margin < 0.1;
    const card = el("div", { class: "crop" + (doubtful ? " review" : ""), tabindex: "0",
      "data-name": r.query, role: "button", "aria-label": `crop ${r.query}: class ${p.label}` },
    el("div", { class: "thumb" }, el("img", { src: r.thumb, alt: r.query })),
    el("div", { class: "call" },
      el("span", { class: "cls", "data-role": "class", text: p.label }),
      el("span", { class: "conf", text: `${unit} ${p.score.toFixed(2)} · margin ${p.margin.toFixed(2)}` })),
    el("div", { class: "agree", text: `${agree} of ${r.neighbours.length} neighbours say ${p.label}` }),
    doubtful ? el("div", { class: "chips" }, el("span", { class: "chip", text: r.knn_label !== p.label ? `neighbours say ${r.knn_label}` : "low margin" })) : null,
    el("div", { class: "name", title: r.query, text: r.query }));
    const show = () => {
      selectCard(grid, card);
      renderNeighbours($("crops-neighbours"), { name: r.query, thumb: r.thumb, label: p.label,
        facts: `${unit} ${p.score.toFixed(3)}, margin ${p.margin.toFixed(3)}` +
          (r.predicted && r.call ? `; proxies alone: ${r.predicted.label}` : "") }, r.neighbours);
    };
    card.addEventListener("click", show);
    card.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); show(); } });
    grid.append(card);
    if (i === 0) show();
  });
  showErrors($("crop-errors"), body.errors);
  $("crops-view").hidden = false;
}

function selectCard(grid, card) {
  for (const c of grid.querySelectorAll(".crop.selected")) c.classList.remove("selected");
  card.classList.add("selected");
}

function renderNeighbours(panel, query, neighbours) {
  panel.replaceChildren(
    el("h3", { text: "Nearest archived chromosomes" }),
    el("div", { class: "query" },
      el("img", { src: query.thumb, alt: query.name }),
      el("div", { class: "facts" }, el("b", { text: query.label }), el("br"),
        document.createTextNode(query.name), el("br"), document.createTextNode(query.facts))),
    el("div", { class: "nn-grid" }, ...neighbours.map((n) => el("a", {
      class: "nn " + (n.label === query.label ? "same" : "other"), href: `/api/images/${n.id}`,
      target: "_blank", rel: "noopener", title: n.path,
    }, el("div", { class: "img" }, el("img", { src: `/api/images/${n.id}/thumb`, alt: `archived ${n.label}`, loading: "lazy" })),
    el("div", { class: "lab", text: n.label || "?" }),
    el("div", { class: "meta", text: `cos ${n.score.toFixed(2)} · cell ${n.cell_id || "–"}` })))));
}

function showErrors(box, errors) {
  box.hidden = !errors || !errors.length;
  if (box.hidden) return;
  box.replaceChildren(el("b", { text: `${errors.length} file(s) not used:` }),
    el("ul", {}, ...errors.map((e) => el("li", { text: `${e.file}: ${e.error}` }))));
}

// -- a cell --------------------------------------------------------------------------------

async function karyotypeCell(files, folder) {
  files = usable(files);
  if (!files.length) return status("No image files (or zip) among those dropped.", "error");
  const zip = files.length === 1 && /\.zip$/i.test(files[0].name);
  const name = folder || (zip ? files[0].name.replace(/\.zip$/i, "") : "cell");
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  status(`Reading the karyotype of ${zip ? name : files.length + " crops"}…`, "busy");
  $("crops-view").hidden = true;
  try {
    const url = `/api/karyotype?karyogram=true&k=9&cell=${encodeURIComponent(name)}`;
    const body = await api(url, { method: "POST", body: form });
    state.cellName = name;
    state.cell = { model: body, files, labels: Object.fromEntries(body.crops.map((c) => [c.path, c.extra ? "extra" : c.label])) };
    state.cell.current = body;
    renderCell();
    status(`${body.n_crops} chromosomes read: ${body.karyotype}; ${body.review.length} to review.`);
  } catch (err) {
    status(err.message, "error");
    if (err.body && err.body.errors) showErrors($("cell-errors"), err.body.errors);
  }
}

function corrections() {
  const { model, labels } = state.cell;
  return model.crops.filter((c) => labels[c.path] !== (c.extra ? "extra" : c.label));
}

const MODEL_CAPTION = "Karyogram as the model called it; crops to review have a red outline.";

function setKaryogram(src, caption, stale) {
  const img = $("karyogram");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = src;
  $("karyogram-caption").textContent = caption;
  $("karyogram-caption").className = stale ? "stale" : "";
}

function renderCell() {
  const { model } = state.cell;
  setKaryogram(model.karyogram, MODEL_CAPTION, false);
  $("redraw").hidden = true;
  showErrors($("cell-errors"), model.skipped);
  renderSummary(state.cell.current);
  const order = (c) => (c.extra ? 99 : CLASSES.indexOf(c.label));
  const crops = model.crops.map((c, i) => [c, i]).sort((a, b) => order(a[0]) - order(b[0]) || a[1] - b[1]);
  const grid = $("cell-grid");
  grid.replaceChildren();
  for (const [c] of crops) grid.append(cellCard(c));
  applyFilter();
  $("cell-neighbours").replaceChildren(el("p", { class: "empty", text: "Click a chromosome to compare it with its nearest archived chromosomes." }));
  const first = grid.querySelector(".crop.review") || grid.querySelector(".crop");
  if (first) first.click();
  $("cell-view").hidden = false;
}

function cellCard(c) {
  const select = el("select", { "aria-label": `class of ${c.path}`, "data-role": "label" },
    ...CLASSES.map((k) => el("option", { value: k, text: k })), el("option", { value: "extra", text: "no chromosome" }));
  select.value = state.cell.labels[c.path];
  const reasons = c.review || [];
  const card = el("div", { class: "crop" + (reasons.length ? " review" : ""), tabindex: "0", "data-name": c.path },
    el("div", { class: "thumb" }, el("img", { src: c.thumb, alt: c.path })),
    el("div", { class: "call" }, select,
      el("span", { class: "conf", text: `${Math.round(100 * c.confidence)}%` })),
    el("div", { class: "chips" }, ...reasons.map((r) => el("span", { class: "chip", text: r })),
      c.knn_label && c.knn_label !== c.label ? el("span", { class: "chip amber", text: `neighbours say ${c.knn_label}` }) : null),
    el("div", { class: "name", title: c.path, text: c.path }));
  select.addEventListener("click", (e) => e.stopPropagation());
  select.addEventListener("change", () => correct(c, select.value, card));
  const show = () => {
    selectCard($("cell-grid"), card);
    renderNeighbours($("cell-neighbours"), { name: c.path, thumb: c.thumb, label: state.cell.labels[c.path],
      facts: `model: ${c.extra ? "extra" : c.label}, ${Math.round(100 * c.confidence)}%` }, c.neighbours);
  };
  card.addEventListener("click", show);
  card.addEventListener("keydown", (e) => { if (e.target === card && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); show(); } });
  markCorrected(card, c);
  return card;
}

function markCorrected(card, c) {
  const changed = state.cell.labels[c.path] !== (c.extra ? "extra" : c.label);
  card.classList.toggle("corrected", changed);
}

async function correct(crop, label, card) {
  state.cell.labels[crop.path] = label;
  markCorrected(card, crop);
  await recount();
}

async function recount() {
  const crops = state.cell.model.crops.map((c) => ({ path: c.path, label: state.cell.labels[c.path] }));
  try {
    status("Recounting…", "busy");
    state.cell.current = await api("/api/karyotype/recount", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ crops }),
    });
    renderSummary(state.cell.current);
    const n = corrections().length;
    if (n) {
      $("karyogram-caption").textContent = "The karyogram does not show your latest correction(s) yet; the karyotype above counts them.";
      $("karyogram-caption").className = "stale";
    } else {
      setKaryogram(state.cell.model.karyogram, MODEL_CAPTION, false);
    }
    $("redraw").hidden = !n;
    status(n ? `Karyotype recounted with ${n} correction(s): ${state.cell.current.karyotype}.` : "All corrections undone.");
  } catch (err) {
    status(err.message, "error");
  }
}

function renderSummary(r) {
  const n = corrections().length;
  const box = $("karyotype");
  box.textContent = r.karyotype;
  box.className = "karyotype " + (r.normal ? "normal" : "abnormal");
  const model = state.cell.model;
  const note = $("karyotype-note");
  note.textContent = n ? `corrected (${n}); the model read ${model.karyotype}` : (r.normal ? "normal" : "abnormal: review before reporting");
  note.className = "note" + (n ? " changed" : "");
  const facts = $("summary-facts");
  const review = model.review.length;
  facts.replaceChildren(
    el("div", {}, el("b", { text: state.cellName }), document.createTextNode(` · ${r.n_crops} chromosomes`)),
    el("div", { text: r.missing.length ? `missing: ${r.missing.join(", ")}` : "no class missing" }),
    el("div", { text: `${review} marked for review by the model` + (r.extra.length ? ` · ${r.extra.length} not a chromosome` : "") }));
  const odd = new Set(r.review_classes);
  $("counts").replaceChildren(...CLASSES.map((k) => el("div", { class: "count" + (odd.has(k) ? " odd" : ""), "data-class": k },
    el("span", { class: "c", text: k }), el("span", { class: "n", text: String(r.counts[k]) }))));
  $("reset").disabled = !n;
}

function applyFilter() {
  const only = $("only-review").checked;
  for (const card of $("cell-grid").children) card.hidden = only && !card.classList.contains("review") && !card.classList.contains("corrected");
}

async function resetCorrections() {
  const { model } = state.cell;
  state.cell.labels = Object.fromEntries(model.crops.map((c) => [c.path, c.extra ? "extra" : c.label]));
  for (const card of $("cell-grid").children) {
    const c = model.crops.find((x) => x.path === card.dataset.name);
    card.querySelector("select").value = state.cell.labels[c.path];
    markCorrected(card, c);
  }
  await recount();
}

async function redraw() {
  const fixed = corrections();
  const labels = Object.fromEntries(fixed.map((c) => [c.path, state.cell.labels[c.path]]));
  const form = new FormData();
  for (const f of state.cell.files) form.append("files", f, f.name);
  form.append("labels", JSON.stringify(labels));
  status("Redrawing the karyogram with your corrections…", "busy");
  try {
    const response = await fetch(`/api/karyotype?format=png&cell=${encodeURIComponent(state.cellName)}`, { method: "POST", body: form });
    if (!response.ok) throw new Error((await response.json()).error);
    const url = URL.createObjectURL(await response.blob());
    setKaryogram(url, `Karyogram with your ${fixed.length} correction(s); hand-corrected crops have a red outline.`, false);
    $("redraw").hidden = true;
    status(`Karyogram redrawn: ${state.cell.current.karyotype}.`);
  } catch (err) {
    status("The karyogram could not be redrawn: " + err.message, "error");
  }
}

// -- export --------------------------------------------------------------------------------

function calls() {
  const { model, labels } = state.cell;
  return model.crops.map((c) => ({
    file: c.path,
    model_label: c.extra ? "extra" : c.label,
    model_confidence: c.confidence,
    final_label: labels[c.path],
    corrected: labels[c.path] !== (c.extra ? "extra" : c.label),
    review: (c.review || []).join("; "),
    neighbours_say: c.knn_label || "",
  }));
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function csvCell(v) {
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function exportCsv() {
  const rows = calls();
  const head = ["cell", "karyotype", ...Object.keys(rows[0])];
  const lines = [head.join(",")].concat(rows.map((r) =>
    [state.cellName, state.cell.current.karyotype, ...Object.values(r)].map(csvCell).join(",")));
  download(`${state.cellName}.calls.csv`, "text/csv", lines.join("\n") + "\n");
}

function exportJson() {
  const r = state.cell.current;
  const out = {
    cell: state.cellName,
    exported: new Date().toISOString(),
    model_fingerprint: state.card ? state.card.model_fingerprint : null,
    karyotype: r.karyotype,
    karyotype_by_model: state.cell.model.karyotype,
    corrections: corrections().length,
    counts: r.counts,
    missing: r.missing,
    crops: calls(),
  };
  download(`${state.cellName}.calls.json`, "application/json", JSON.stringify(out, null, 2) + "\n");
}

// -- wiring --------------------------------------------------------------------------------

function init() {
  loadCard();
  setupDrop($("drop-crops"), (files) => queryCrops(files));
  setupDrop($("drop-cell"), (files, folder) => karyotypeCell(files, folder));
  $("input-crops").addEventListener("change", (e) => { queryCrops([...e.target.files]); e.target.value = ""; });
  $("input-cell-folder").addEventListener("change", (e) => {
    const files = [...e.target.files];
    karyotypeCell(files, folderOf(files));
    e.target.value = "";
  });
  $("input-cell-files").addEventListener("change", (e) => { karyotypeCell([...e.target.files], null); e.target.value = ""; });
  $("only-review").addEventListener("change", applyFilter);
  $("reset").addEventListener("click", resetCorrections);
  $("redraw").addEventListener("click", redraw);
  $("export-csv").addEventListener("click", exportCsv);
  $("export-json").addEventListener("click", exportJson);
}

document.addEventListener("DOMContentLoaded", init);
