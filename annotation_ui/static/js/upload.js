// Uploads: files chosen or dropped go to ../imgup two at a time, each with its progress and the gateway's answer.
import { $, el, say } from "./dom.js";
import { state } from "./state.js";
import { loadPage } from "./grid.js";
import { openPhoto } from "./photo.js";
import { scheduleProgress } from "./progress.js";

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

export function installUploads() {
  $("#files").addEventListener("change", (e) => { uploadAll(e.target.files); e.target.value = ""; });
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); uploadAll(e.dataTransfer.files); });
}
