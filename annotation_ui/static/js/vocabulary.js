// The labels of the next model: add one (suggested names come with evidence), see each one's evidence and what it
// still needs, retire one. Adding or retiring reloads the vocabulary: new labels get chips and hotkeys at once.
import { $, el, say } from "./dom.js";
import { api, q, send } from "./api.js";
import { hooks, loadModel, state } from "./state.js";

function render() {
  const v = state.vocabulary;
  $("#label-suggestions").replaceChildren(...v.suggestions.map((s) => el("option", {
    value: s.name, label: s.source === "detector" ? "COCO object: tagged with no example" : "ImageNet classes" })));
  const rows = v.labels.filter((lab) => lab.added).concat(v.labels.filter((lab) => !lab.added));
  $("#vocabulary tbody").replaceChildren(...rows.map((lab) => {
    const ev = lab.evidence;
    const source = ev.source === "detector" ? `detector: ${ev.detector}` : ev.source === "imagenet"
      ? `ImageNet (${Object.keys(ev.imagenet).length} classes)` : "examples only";
    const n = lab.needs.to_be_tagged;
    const needs = n ? `${n} more to be tagged` : lab.needs.to_outweigh_evidence ? `${lab.needs.to_outweigh_evidence} more to stand on its own` : "enough";
    const retire = el("button", { type: "button", className: "retire", textContent: "retire",
      title: "leave it out of the next model (what was saved for it stays)" });
    retire.addEventListener("click", () => retireLabel(lab.name));
    const row = el("tr", {}, el("td", { textContent: lab.name + (lab.added && !lab.served ? " (new)" : "") }),
      el("td", { textContent: source }), el("td", { textContent: `${lab.positives} (${lab.sample_positives})` }),
      el("td", { textContent: needs }), el("td", {}, retire));
    row.dataset.label = lab.name;
    return row;
  }));
}

function evidenceNote(ev) {
  if (ev.source === "detector") return `the detector knows "${ev.detector}": tagged from the next retrain, with no example needed`;
  if (ev.source === "imagenet") return `${Object.keys(ev.imagenet).length} ImageNet classes speak for it; label a few photos to make it precise`;
  return "nothing speaks for it yet: label photos with it (it is tagged once it has 3)";
}

async function addLabel(e) {
  e.preventDefault();
  const name = $("#new-label").value.trim();
  const synonyms = $("#new-synonyms").value.split(",").map((s) => s.trim()).filter(Boolean);
  try {
    const r = await send("POST", "api/labels", { name, synonyms, labeller: $("#labeller").value.trim() || "person" });
    $("#new-label").value = "";
    $("#new-synonyms").value = "";
    await loadModel();
    const lab = state.labels.find((l) => l.name === r.label.name);
    $("#add-label-result").textContent = `Added ${r.label.name} (key ${lab?.hotkey || "none"}): ${evidenceNote(r.evidence)}`;
    hooks.refreshPhoto();
  } catch (err) { $("#add-label-result").textContent = `Not added: ${err.message}`; }
}

async function retireLabel(name) {
  try {
    await api(`api/labels/${q(name)}?labeller=${q($("#labeller").value.trim() || "person")}`, { method: "DELETE" });
    say(`Retired ${name} from the next model; what was saved for it stays.`);
    await loadModel();
    hooks.refreshPhoto();
  } catch (err) { say(`Not retired: ${err.message}`, true); }
}

export function installVocabulary() {
  hooks.vocabulary = render;
  $("#add-label-form").addEventListener("submit", addLabel);
}
