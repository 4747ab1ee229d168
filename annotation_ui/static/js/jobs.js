// Retrain, compare and deploy: one job at a time on the server; its state is polled and shown with the new
// model's figures beside the served one's on the same validation photos.
import { $, el, say } from "./dom.js";
import { api, q, send } from "./api.js";
import { loadModel, state } from "./state.js";

function renderJob(job) {
  state.job = job;
  $("#job").hidden = !job;
  if (!job) return;
  const what = job.kind === "train" ? "Retrain" : "Deploy";
  let text = `${what} job ${job.id}: ${job.state}${job.state === "running" ? ` (${job.step})` : ""}`;
  if (job.state === "failed" || job.state === "cancelled") text += ` — ${job.error}`;
  if (job.kind === "deploy" && job.state === "succeeded") text += ` — version ${job.result.version} serves now`;
  $("#job-state").textContent = text;
  $("#job-state").className = job.state;
  $("#job-log").textContent = job.log || "";
  const busy = job.state === "running" || job.state === "queued";
  $("#train").disabled = busy;
  $("#cancel-job").hidden = !(busy && job.kind === "train");
  $("#cancel-job").disabled = false;
  const table = $("#compare");
  const train = job.kind === "train" ? job : null;
  if (train && train.state === "succeeded") {
    const r = train.result;
    $("#served-head").textContent = r.served ? `served (${r.served.version})` : "served (not found)";
    const fmt = (x) => (x === null || x === undefined ? "—" : x.toFixed(3));
    table.tBodies[0].replaceChildren(
      el("tr", {}, el("td", { textContent: "validation photos" }), el("td", { textContent: String(r.validation_photos) }),
        el("td", { textContent: String(r.validation_photos) })),
      ...(r.metric_names || Object.keys(r.new).filter((k) => typeof r.new[k] === "number")).map((m) => el("tr", {}, el("td", { textContent: m }), el("td", { textContent: fmt(r.new[m]) }),
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

export function installJobs() {
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

  $("#cancel-job").addEventListener("click", async () => {
    const job = state.job;
    if (!job) return;
    $("#cancel-job").disabled = true;
    try { await send("POST", `api/jobs/${q(job.id)}/cancel`); pollJob(job.id); }
    catch (err) { say(`Cancel: ${err.message}`, true); $("#cancel-job").disabled = false; }
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
}

export async function loadJobs() {
  const { latest, jobs } = await api("api/jobs");
  if (!latest) return;
  if (latest.kind === "deploy") { // show the retrain it deployed, then the deploy's own state
    const train = jobs.find((j) => j.kind === "train");
    if (train) renderJob(await api(`api/jobs/${q(train.id)}`));
  }
  renderJob(latest);
}
