// The photo editor: one photo's labels (suggestions pre-selected), hotkey toggles, save-and-next with the next
// photo prefetched, drafts kept when moving on, undo of toggles and saves.
import { $, el, say } from "./dom.js";
import { api, q, send } from "./api.js";
import { PAGE, policy, policyOf, state } from "./state.js";
import { loadPage, markTile, tile } from "./grid.js";
import { scheduleProgress } from "./progress.js";

function fetchPhoto(id) {
  if (!state.cache.has(id)) {
    const entry = Promise.all([
      api(`../imginfo?id_name=${q(id)}&policy=${policy()}`).catch((err) => ({ error: err.message })),
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

export async function openPhoto(i) {
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
    : `Suggested by model ${info.model_version} (${info.tag_policy}): ${(info.predict_tags || []).join(", ") || "nothing"}`;
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
    const { threshold, precision, recall } = policyOf(lab);
    const fresh = !lab.served; // added since the served model was trained: no score yet
    const bar = el("span", { className: "bar" }, el("span", { className: "fill" }), el("span", { className: "thr" }));
    if (score !== undefined) {
      bar.firstChild.style.width = `${(score * 100).toFixed(1)}%`;
      bar.title = `score ${score.toFixed(3)}, ` + (threshold === null ? "never suggested (too few positives to tell)"
        : `threshold ${threshold}`);
    }
    if (threshold === null) bar.lastChild.hidden = true;
    else bar.lastChild.style.left = `${(threshold * 100).toFixed(1)}%`;
    const pct = (x) => `${Math.round(x * 100)}%`;
    const quality = el("small", { className: "quality", textContent: fresh ? newLabelNote(lab)
      : threshold === null ? "not tagged yet" : precision === null ? "" : `right ${pct(precision)} · finds ${pct(recall)}` });
    quality.title = "out-of-fold estimate at this threshold: how often its tags are right, how many of its photos it tags";
    const chip = el("button", { className: "chip", type: "button" },
      el("kbd", { textContent: lab.hotkey || " " }), el("span", { className: "lname", textContent: lab.name }), bar,
      quality);
    chip.dataset.label = lab.name;
    chip.dataset.value = value === null ? "unknown" : String(value);
    chip.setAttribute("aria-pressed", String(value === true));
    if (c.suggested.has(lab.name)) { chip.classList.add("suggested"); chip.title = "suggested by the model"; }
    chip.addEventListener("click", (e) => toggle(lab.name, e.shiftKey));
    return chip;
  }));
}

// What a label added since the served model says about itself: where its evidence comes from, and what it needs.
export function newLabelNote(lab) {
  const ev = lab.evidence || {};
  const more = lab.needs ? lab.needs.to_be_tagged : 0;
  const from = ev.source === "detector" ? `new · detector: ${ev.detector}` : ev.source === "imagenet" ? "new · ImageNet" : "new";
  return more ? `${from} · needs ${more} more` : `${from} · tagged after the next retrain`;
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

export function toggle(name, unknown = false) {
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

function body(values, sha256) {
  const labels = [], unknown = [];
  for (const [name, v] of values) { if (v === true) labels.push(name); else if (v === null) unknown.push(name); }
  return { labels, unknown, labeller: $("#labeller").value.trim() || "person", policy: policy(), sha256 };
}

export async function saveAndNext() {
  const c = state.current;
  if (!c) return;
  const row = state.rows[state.index];
  const before = c.photo;
  const payload = body(c.values, c.photo.sha256); // the bytes shown: a photo replaced meanwhile is refused
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

export async function undo() {
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
      await send("PUT", `api/photos/${q(last.id)}/labels`, body(values, b.sha256));
    }
    state.cache.delete(last.id);
    await loadPage(state.offset);
    const i = state.rows.findIndex((r) => r.id_name === last.id);
    if (i >= 0) await openPhoto(i);
    say(`Undid the save of ${last.id}.`);
    scheduleProgress();
  } catch (err) { say(`Undo failed: ${err.message}`, true); }
}
