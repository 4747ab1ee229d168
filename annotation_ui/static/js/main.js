// The annotation page, as ES modules without a build step: main wires the parts and loads the first page.
import { $, say } from "./dom.js";
import { PAGE, hooks, loadModel, state } from "./state.js";
import { loadPage } from "./grid.js";
import { openPhoto, saveAndNext, undo } from "./photo.js";
import { installKeys } from "./keys.js";
import { installUploads } from "./upload.js";
import { loadProgress } from "./progress.js";
import { installJobs, loadJobs } from "./jobs.js";
import { ensureSignedIn, installSignIn } from "./signin.js";
import { installVocabulary } from "./vocabulary.js";

hooks.open = openPhoto;
hooks.refreshPhoto = () => { if (state.index >= 0) { state.cache.clear(); openPhoto(state.index); } };
installVocabulary();
installKeys();
installUploads();
installJobs();
installSignIn();
$("#save").addEventListener("click", saveAndNext);
$("#next").addEventListener("click", () => openPhoto(state.index + 1));
$("#prev").addEventListener("click", () => openPhoto(state.index - 1));
$("#undo").addEventListener("click", undo);
$("#policy").value = localStorage.getItem("policy") || "complete";
$("#policy").addEventListener("change", () => { localStorage.setItem("policy", $("#policy").value); state.cache.clear(); });
for (const id of ["#status", "#label-filter", "#order", "#policy"]) {
  $(id).addEventListener("change", () => { state.index = -1; loadPage(0).then(() => openPhoto(0)); });
}
$("#prev-page").addEventListener("click", () => loadPage(Math.max(0, state.offset - PAGE)));
$("#next-page").addEventListener("click", () => loadPage(state.offset + PAGE));
$("#labeller").value = localStorage.getItem("labeller") || "person";
$("#labeller").addEventListener("change", () => localStorage.setItem("labeller", $("#labeller").value));

(async () => {
  try {
    await ensureSignedIn();
    await loadModel();
    await loadPage(0);
    window.__timings.interactive = performance.now();
    document.body.dataset.ready = "1";
    if (state.rows.length) openPhoto(0);
    loadProgress();
    loadJobs();
  } catch (err) { say(`The page could not load: ${err.message}`, true); }
})();
