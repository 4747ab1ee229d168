// Labelling progress and how often people kept the model's suggestions (api/progress).
import { $, el } from "./dom.js";
import { api } from "./api.js";

let progressTimer = null;
export function scheduleProgress() { clearTimeout(progressTimer); progressTimer = setTimeout(loadProgress, 300); }

let asked = 0;
export async function loadProgress() {
  const mine = ++asked;
  const p = await api("api/progress");
  if (mine !== asked) return;  // a later request is on its way: an earlier answer arriving last must not win
  const pct = (x) => (x === null || x === undefined ? "—" : `${Math.round(x * 100)}%`);
  $("#progress-summary").textContent = `${p.labelled} of ${p.total} photos labelled · suggestions kept ${pct(p.suggestion_precision)}`
    + ` · labels the model found ${pct(p.suggestion_recall)} (from ${p.compared_with_suggestions} saves with suggestions)`;
  $("#progress-summary").dataset.labelled = p.labelled;
  $("#agreement tbody").replaceChildren(...Object.entries(p.per_label).filter(([, r]) => r.reviewed).map(([name, r]) =>
    el("tr", {}, ...[name, r.positives, r.accepted, r.rejected, r.added, pct(r.agreement)].map((v) => el("td", { textContent: String(v) })))));
}
