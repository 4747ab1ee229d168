// The annotation page. Everything a user supplied is put into the page with textContent, never as HTML.
// API: api/model, api/photos, api/photo, PUT|DELETE api/photos/<id>/labels, api/progress, api/jobs, ../imgup, ../imginfo
"use strict";
const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};
const HOTKEYS = "1234567890qwertyiopasdfghjklzxcvbnm"; // u is undo
const PAGE = 60;
const state = {
  model: null, labels: [], byCode: new Map(), rows: [], total: 0, offset: 0, index: -1,
  current: null, // {id, values: Map(name -> true|false|null), suggested: Set, saved: record|null}
  cache: new Map(), drafts: new Map(), undo: [], job: null, jobTimer: null,
};
window.__timings = { steps: [] };

async function json(response) {
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw Object.assign(new Error(body.error || `HTTP ${response.status}`), { status: response.status });
  return body;
}
const api = (path, options) => fetch(path, options).then(json);
const q = (id) => encodeURIComponent(id);
const send = (method, path, body) => api(path, {
  method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
});

// ---- model and vocabulary -------------------------------------------------------------------------------------
async function loadModel() {
  const model = await api("api/model");
  state.model = model;
  state.labels = model.labels;
  state.byCode.clear();
  model.labels.forEach((lab, i) => {
    lab.hotkey = HOTKEYS[i] || "";
    if (lab.hotkey) state.byCode.set(/\d/.test(lab.hotkey) ? `Digit${lab.hotkey}` : `Key${lab.hotkey.toUpperCase()}`, lab.name);
  });
  $("#model-version").textContent = model.version ? `model ${model.version}` : "no model answering";
  $("#model-source").textContent = `labels from ${model.source}`;
  const filter = $("#label-filter");
  const chosen = filter.value;
  filter.replaceChildren(el("option", { value: "", textContent: "any label" }),
    ...model.labels.map((lab) => el("option", { value: lab.name, textContent: lab.name })));
  filter.value = model.labels.some((l) => l.name === chosen) ? chosen : "";
}

// ---- the grid -------------------------------------------------------------------------------------------------
function query(offset) {
  const p = new URLSearchParams({ status: $("#status").value, order: $("#order").value, offset, limit: PAGE });
  if ($("#label-filter").value) p.set("label", $("#label-filter").value);
  return `api/photos?${p}`;
}

async function loadPage(offset = 0) {
  const page = await api(query(offset));
  state.rows = page.photos;
  state.total = page.total;
  state.offset = offset;
  renderGrid();
  return page;
}

function tile(row, i) {
  const img = el("img", { alt: "", loading: "lazy", decoding: "async", width: 128, height: 96 });
  img.src = `api/thumb?id_name=${q(row.id_name)}&v=${row.sha256.slice(0, 12)}`;
  const badge = el("span", { className: "badge" });
  if (row.labelled_at) { badge.textContent = `✓ ${row.labels.length}`; badge.title = row.labels.join(", "); }
  else if (row.suggested_tags) { badge.textContent = `${row.suggested_tags.length} suggested`; badge.className += " hint"; }
  const item = el("button", { className: `tile${row.labelled_at ? " labelled" : ""}`, title: row.id_name },
    img, el("span", { className: "name", textContent: row.id_name }), badge);
  item.dataset.index = i;
  item.setAttribute("role", "listitem");
  item.addEventListener("click", () => openPhoto(i));
  return item;
}

function renderGrid() {
  $("#grid").replaceChildren(...state.rows.map(tile));
  const last = Math.min(state.offset + state.rows.length, state.total);
  $("#count").textContent = state.total ? `${state.offset + 1}–${last} of ${state.total}` : "no photos";
  $("#page-no").textContent = `page ${Math.floor(state.offset / PAGE) + 1} of ${Math.max(1, Math.ceil(state.total / PAGE))}`;
  $("#prev-page").disabled = state.offset === 0;
  $("#next-page").disabled = last >= state.total;
  markTile();
}

function markTile() {
  document.querySelectorAll(".tile.current").forEach((t) => t.classList.remove("current"));
  const t = document.querySelector(`.tile[data-index="${state.index}"]`);
  if (t) t.classList.add("current");
}

// ---- one photo ------------------------------------------------------------------------------------------------
function fetchPhoto(id) {
  if (!state.cache.has(id)) {
    const entry = Promise.all([
      api(`../imginfo?id_name=${q(id)}`).catch((err) => ({ error: err.message })),
      api(`api/photo?id_name=${q(id)}`),
    ]).then(([info, photo]) => ({ info, photo }));
    entry.catch(() => state.cache.delete(id));
    state.cache.set(id, entry);
    const img = new Image();
    img.src = `api/view?id_name=${q(id)}`; // warm the browser cache for the image view
  }
  return state.cache.get(id);
}

function initialValues(info, photo) {
  const values = new Map();
  const suggested = new Set(info.predict_tags || []);
  for (const lab of state.labels) {
    if (photo.labelled_at) {
      const d = photo.label_detail;
      values.set(lab.name, d ? (d[lab.name] ? d[lab.name].value : null) : (photo.labels || []).includes(lab.name));
    } else values.set(lab.name, suggested.has(lab.name));
  }
  return { values, suggested };
}

async function openPhoto(i) {
  if (i < 0) return;
  if (i >= state.rows.length) {
    if (state.offset + state.rows.length >= state.total) { say("That was the last photo of this list."); return; }
    await loadPage(state.offset + PAGE);
    i = 0;
  }
  keepDraft();
  state.index = i;
  const row = state.rows[i];
  const { info, photo } = await fetchPhoto(row.id_name);
  if (state.index !== i) return; // the user moved on meanwhile
  const draft = state.drafts.get(row.id_name);
  const init = initialValues(info, photo);
  state.current = { id: row.id_name, values: draft || init.values, suggested: init.suggested, info, photo,
    dirty: Boolean(draft) };
  renderPhoto();
  window.__timings.shownAt = performance.now();
  window.__timings.shownId = row.id_name;
  if (window.__prefetch !== false) fetchPhoto(state.rows[i + 1]?.id_name || row.id_name); // prefetch the next one
}

function keepDraft() {
  const c = state.current;
  if (c && c.dirty) state.drafts.set(c.id, c.values);
}

function renderPhoto() {
  const c = state.current;
  $("#viewer").hidden = false;
  $("#current").textContent = c.id;
  const view = $("#view");
  view.alt = `photo ${c.id}`;
  view.src = `api/view?id_name=${q(c.id)}`;
  const info = c.info;
  $("#fact-date").textContent = info.data_information || "—";
  const gps = info.GPS_information;
  $("#fact-gps").textContent = gps && gps.Latitude != null ? `${gps.Latitude.toFixed(5)}, ${gps.Longitude.toFixed(5)}` : "—";
  const place = info.place;
  $("#fact-place").textContent = place ? [place.city, place.region, place.country].filter(Boolean).join(", ") : "—";
  $("#suggest-note").textContent = info.error ? `No suggestions: ${info.error}`
    : `Suggested by model ${info.model_version}: ${(info.predict_tags || []).join(", ") || "nothing"}`;
  renderLabels();
  renderSaved();
  markTile();
}

function renderLabels() {
  const c = state.current;
  const scores = c.info.scores || {};
  $("#labels").replaceChildren(...state.labels.map((lab) => {
    const value = c.values.get(lab.name);
    const score = scores[lab.name];
    const bar = el("span", { className: "bar" }, el("span", { className: "fill" }), el("span", { className: "thr" }));
    if (score !== undefined) {
      bar.firstChild.style.width = `${(score * 100).toFixed(1)}%`;
      bar.title = `score ${score.toFixed(3)}, threshold ${lab.threshold}`;
    }
    bar.lastChild.style.left = `${(lab.threshold * 100).toFixed(1)}%`;
    const chip = el("button", { className: "chip", type: "button" },
      el("kbd", { textContent: lab.hotkey || " " }), el("span", { className: "lname", textContent: lab.name }), bar);
    chip.dataset.label = lab.name;
    chip.dataset.value = value === null ? "unknown" : String(value);
    chip.setAttribute("aria-pressed", String(value === true));
    if (c.suggested.has(lab.name)) { chip.classList.add("suggested"); chip.title = "suggested by the model"; }
    chip.addEventListener("click", (e) => toggle(lab.name, e.shiftKey));
    return chip;
  }));
}

function renderSaved() {
  const c = state.current;
  const s = $("#saved-state");
  if (c.dirty) { s.textContent = "unsaved changes"; s.className = "dirty"; return; }
  if (c.photo.labelled_at) {
    const d = c.photo.label_detail || {};
    const who = [...new Set(Object.values(d).map((x) => x.by))].join(", ") || "a person";
    s.textContent = `saved ${c.photo.labelled_at.slice(0, 19).replace("T", " ")} by ${who}`;
    s.className = "saved";
  } else { s.textContent = "not labelled yet (suggestions pre-selected)"; s.className = ""; }
}

function toggle(name, unknown = false) {
  const c = state.current;
  if (!c) return;
  const prev = c.values.get(name);
  const next = unknown ? (prev === null ? false : null) : prev !== true;
  state.undo.push({ type: "toggle", id: c.id, name, prev });
  c.values.set(name, next);
  c.dirty = true;
  renderLabels();
  renderSaved();
}

function body(values) {
  const labels = [], unknown = [];
  for (const [name, v] of values) { if (v === true) labels.push(name); else if (v === null) unknown.push(name); }
  return { labels, unknown, labeller: $("#labeller").value.trim() || "person" };
}

async function saveAndNext() {
  const c = state.current;
  if (!c) return;
  const row = state.rows[state.index];
  const before = c.photo;
  const payload = body(c.values);
  state.drafts.delete(c.id);
  state.undo.push({ type: "save", id: c.id, before });
  const i = state.index;
  const saving = send("PUT", `api/photos/${q(c.id)}/labels`, payload).then((saved) => {
    state.cache.set(c.id, Promise.resolve({ info: c.info, photo: { ...before, ...saved } }));
    if (row) { row.labels = saved.labels; row.labelled_at = saved.labelled_at; }
    const t = document.querySelector(`.tile[data-index="${i}"]`);
    if (t && row) t.replaceWith(tile(row, i));
    say(`Saved ${saved.labels.length} label(s) for ${c.id}.`);
    scheduleProgress();
  }).catch((err) => {
    state.drafts.set(c.id, c.values);
    say(`Not saved: ${c.id}: ${err.message}`, true);
  });
  say(`Saving ${c.id}…`);
  await openPhoto(state.index + 1);
  return saving;
}

async function undo() {
  const last = state.undo.pop();
  if (!last) { say("Nothing to undo."); return; }
  if (last.type === "toggle") {
    if (!state.current || state.current.id !== last.id) {
      const i = state.rows.findIndex((r) => r.id_name === last.id);
      if (i >= 0) await openPhoto(i);
    }
    if (state.current && state.current.id === last.id) {
      state.current.values.set(last.name, last.prev);
      state.current.dirty = true;
      renderLabels();
      renderSaved();
    }
    return;
  }
  // undo a save: put the photo back as it was before (unlabelled, or its earlier labels)
  const b = last.before;
  try {
    if (!b.labelled_at) await api(`api/photos/${q(last.id)}/labels`, { method: "DELETE" });
    else {
      const values = new Map(state.labels.map((lab) => [lab.name, b.label_detail ? (b.label_detail[lab.name]?.value ?? null)
        : (b.labels || []).includes(lab.name)]));
      await send("PUT", `api/photos/${q(last.id)}/labels`, body(values));
    }
    state.cache.delete(last.id);
    await loadPage(state.offset);
    const i = state.rows.findIndex((r) => r.id_name === last.id);
    if (i >= 0) await openPhoto(i);
    say(`Undid the save of ${last.id}.`);
    scheduleProgress();
  } catch (err) { say(`Undo failed: ${err.message}`, true); }
}

function say(text, isError = false) {
  const line = $("#progress-line");
  line.dataset.message = text;
  line.textContent = text;
  line.className = isError ? "error" : "";
}

// ---- keyboard -------------------------------------------------------------------------------------------------
document.addEventListener("keydown", (e) => {
  const t = e.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement) return;
  if (e.altKey || e.metaKey) return;
  if (e.ctrlKey) { if (e.key === "z") { e.preventDefault(); undo(); } return; }
  if (e.key === "Enter") { e.preventDefault(); window.__timings.keyAt = performance.now(); saveAndNext(); return; }
  if (e.key === "ArrowRight") { e.preventDefault(); openPhoto(state.index + 1); return; }
  if (e.key === "ArrowLeft") { e.preventDefault(); openPhoto(state.index - 1); return; }
  if (e.code === "KeyU") { e.preventDefault(); undo(); return; }
  const name = state.byCode.get(e.code);
  if (name && state.current) { e.preventDefault(); toggle(name, e.shiftKey); }
});
$("#save").addEventListener("click", saveAndNext);
$("#next").addEventListener("click", () => openPhoto(state.index + 1));
$("#prev").addEventListener("click", () => openPhoto(state.index - 1));
$("#undo").addEventListener("click", undo);
for (const id of ["#status", "#label-filter", "#order"]) {
  $(id).addEventListener("change", () => { state.index = -1; loadPage(0).then(() => openPhoto(0)); });
}
$("#prev-page").addEventListener("click", () => loadPage(Math.max(0, state.offset - PAGE)));
$("#next-page").addEventListener("click", () => loadPage(state.offset + PAGE));
$("#labeller").value = localStorage.getItem("labeller") || "person";
$("#labeller").addEventListener("change", () => localStorage.setItem("labeller", $("#labeller").value));

// ---- uploads --------------------------------------------------------------------------------------------------
function uploadOne(file, row) {
  return new Promise((resolve) => {
    const form = new FormData();
    form.append("file", file);
    form.append("id_name", file.name);
    form.append("if_absent", $("#replace").checked ? "0" : "1");
    const xhr = new XMLHttpRequest();
    const bar = row.querySelector("progress");
    const status = row.querySelector(".state");
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
    xhr.onload = () => {
      let answer = {};
      try { answer = JSON.parse(xhr.responseText); } catch { answer = { error: `HTTP ${xhr.status}` }; }
      bar.value = 1;
      if (xhr.status === 200) { status.textContent = answer.status === "unchanged" ? "already stored" : "stored"; row.className = "ok"; }
      else { status.textContent = answer.error || `HTTP ${xhr.status}`; row.className = "failed"; }
      resolve(xhr.status === 200);
    };
    xhr.onerror = () => { status.textContent = "network error"; row.className = "failed"; resolve(false); };
    xhr.open("POST", "../imgup");
    xhr.send(form);
  });
}

async function uploadAll(files) {
  const list = $("#uploads");
  const jobs = [...files].map((file) => {
    const row = el("li", {}, el("span", { className: "fname", textContent: file.name }), el("progress", { max: 1, value: 0 }),
      el("span", { className: "state", textContent: "waiting" }));
    list.prepend(row);
    return { file, row };
  });
  let next = 0, stored = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const { file, row } = jobs[next++];
      row.querySelector(".state").textContent = "uploading";
      stored += await uploadOne(file, row);
    }
  };
  await Promise.all([worker(), worker()]);
  say(`${stored} of ${jobs.length} photo(s) uploaded.`);
  await loadPage(0);
  scheduleProgress();
  if (state.index < 0 && state.rows.length) openPhoto(0);
}

$("#files").addEventListener("change", (e) => { uploadAll(e.target.files); e.target.value = ""; });
const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); uploadAll(e.dataTransfer.files); });

// ---- progress -------------------------------------------------------------------------------------------------
let progressTimer = null;
function scheduleProgress() { clearTimeout(progressTimer); progressTimer = setTimeout(loadProgress, 300); }

async function loadProgress() {
  const p = await api("api/progress");
  const pct = (x) => (x === null || x === undefined ? "—" : `${Math.round(x * 100)}%`);
  $("#progress-summary").textContent = `${p.labelled} of ${p.total} photos labelled · suggestions kept ${pct(p.suggestion_precision)}`
    + ` · labels the model found ${pct(p.suggestion_recall)} (from ${p.compared_with_suggestions} saves with suggestions)`;
  $("#progress-summary").dataset.labelled = p.labelled;
  $("#agreement tbody").replaceChildren(...Object.entries(p.per_label).filter(([, r]) => r.reviewed).map(([name, r]) =>
    el("tr", {}, ...[name, r.positives, r.accepted, r.rejected, r.added, pct(r.agreement)].map((v) => el("td", { textContent: String(v) })))));
}

// ---- retrain and deploy ---------------------------------------------------------------------------------------
const METRICS = ["mAP", "CF1", "OF1", "CP", "CR"];
function renderJob(job) {
  state.job = job;
  $("#job").hidden = !job;
  if (!job) return;
  const what = job.kind === "train" ? "Retrain" : "Deploy";
  let text = `${what} job ${job.id}: ${job.state}${job.state === "running" ? ` (${job.step})` : ""}`;
  if (job.state === "failed") text += ` — ${job.error}`;
  if (job.kind === "deploy" && job.state === "succeeded") text += ` — version ${job.result.version} serves now`;
  $("#job-state").textContent = text;
  $("#job-state").className = job.state;
  $("#job-log").textContent = job.log || "";
  const busy = job.state === "running" || job.state === "queued";
  $("#train").disabled = busy;
  const table = $("#compare");
  const train = job.kind === "train" ? job : null;
  if (train && train.state === "succeeded") {
    const r = train.result;
    $("#served-head").textContent = r.served ? `served (${r.served.version})` : "served (not found)";
    const fmt = (x) => (x === null || x === undefined ? "—" : x.toFixed(3));
    table.tBodies[0].replaceChildren(
      el("tr", {}, el("td", { textContent: "validation photos" }), el("td", { textContent: String(r.validation_photos) }),
        el("td", { textContent: String(r.validation_photos) })),
      ...METRICS.map((m) => el("tr", {}, el("td", { textContent: m }), el("td", { textContent: fmt(r.new[m]) }),
        el("td", { textContent: r.served ? fmt(r.served[m]) : "—" }))));
    table.hidden = false;
    if (r.validation_photos < 20) $("#job-state").textContent += ` — only ${r.validation_photos} validation photo(s): too few to tell the models apart; label more`;
    $("#deploy").hidden = false;
    $("#deploy").disabled = false;
  } else if (job.kind === "train") { table.hidden = true; $("#deploy").hidden = true; }
  else { $("#deploy").disabled = true; $("#deploy").hidden = job.state === "succeeded"; }
  if (busy) { clearTimeout(state.jobTimer); state.jobTimer = setTimeout(() => pollJob(job.id), 1000); }
  else if (job.kind === "deploy" && job.state === "succeeded") loadModel().catch(() => {});
}

async function pollJob(id) {
  try { renderJob(await api(`api/jobs/${q(id)}`)); } catch (err) { say(`Job status: ${err.message}`, true); }
}

$("#train-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const { job } = await send("POST", "api/jobs/train", {
      recipe: $("#recipe").value, epochs: Number($("#epochs").value), samples: $("#samples").checked,
    });
    renderJob(job);
    pollJob(job.id);
  } catch (err) { say(`Retrain: ${err.message}`, true); }
});

$("#deploy").addEventListener("click", async () => {
  const train = state.job;
  if (!train || train.kind !== "train") return;
  $("#deploy").disabled = true;
  try {
    const { job } = await send("POST", "api/jobs/deploy", { train_job: train.id });
    $("#compare").hidden = false;
    renderJob(job);
    pollJob(job.id);
  } catch (err) { say(`Deploy: ${err.message}`, true); $("#deploy").disabled = false; }
});

async function loadJobs() {
  const { latest, jobs } = await api("api/jobs");
  if (!latest) return;
  if (latest.kind === "deploy") { // show the retrain it deployed, then the deploy's own state
    const train = jobs.find((j) => j.kind === "train");
    if (train) renderJob(await api(`api/jobs/${q(train.id)}`));
  }
  renderJob(latest);
}

// ---- start ----------------------------------------------------------------------------------------------------
(async () => {
  try {
    await loadModel();
    await loadPage(0);
    window.__timings.interactive = performance.now();
    document.body.dataset.ready = "1";
    if (state.rows.length) openPhoto(0);
    loadProgress();
    loadJobs();
  } catch (err) { say(`The page could not load: ${err.message}`, true); }
})();
