// What the page holds: the served model's vocabulary, the listed page of photos, the photo being edited.
import { $, el } from "./dom.js";
import { api } from "./api.js";

export const HOTKEYS = "1234567890qwertyiopasdfghjklzxcvbnm"; // u is undo; with Alt: the labels after these
export const PAGE = 60;
export const state = {
  model: null, labels: [], byCode: new Map(), rows: [], total: 0, offset: 0, index: -1,
  current: null, // {id, values: Map(name -> true|false|null), suggested: Set, saved: record|null}
  cache: new Map(), drafts: new Map(), undo: [], job: null, jobTimer: null,
};
// The tag policy whose suggestions are pre-selected (the page's own choice; complete teaches best).
export const policy = () => $("#policy").value;
// A label's threshold and out-of-fold precision/recall under the page's policy (null threshold: never a tag).
export function policyOf(lab) {
  return (lab.policies && lab.policies[policy()]) || { threshold: lab.threshold, precision: null, recall: null };
}
// Set by main.js: what a click on a tile does (the grid does not import the photo editor).
export const hooks = { open: () => {}, vocabulary: () => {}, refreshPhoto: () => {} };
window.__timings = { steps: [] }; // read by the browser tests

// A label's key: the i-th of HOTKEYS, then the same keys with Alt (shown ⌥).
const code = (k) => (/\d/.test(k) ? `Digit${k}` : `Key${k.toUpperCase()}`);

export async function loadModel() {
  const [model, vocabulary] = await Promise.all([api("api/model"), api("api/labels")]);
  state.model = model;
  state.vocabulary = vocabulary;
  state.labels = vocabulary.labels; // the served labels, then those people added (the next model's)
  state.byCode.clear();
  state.labels.forEach((lab, i) => {
    const key = HOTKEYS[i % HOTKEYS.length];
    const alt = i >= HOTKEYS.length;
    lab.hotkey = i < 2 * HOTKEYS.length ? (alt ? `⌥${key}` : key) : "";
    if (lab.hotkey) state.byCode.set((alt ? "Alt+" : "") + code(key), lab.name);
  });
  $("#model-version").textContent = model.version ? `model ${model.version}` : "no model answering";
  const select = $("#policy");
  for (const option of select.options) option.disabled = model.policies.length > 0 && !model.policies.includes(option.value);
  if (select.selectedOptions[0]?.disabled) select.value = model.tag_policy || "balanced";
  $("#model-source").textContent = `labels from ${model.source}`;
  const filter = $("#label-filter");
  const chosen = filter.value;
  filter.replaceChildren(el("option", { value: "", textContent: "any label" }),
    ...state.labels.map((lab) => el("option", { value: lab.name, textContent: lab.name })));
  filter.value = state.labels.some((l) => l.name === chosen) ? chosen : "";
  hooks.vocabulary();
}
