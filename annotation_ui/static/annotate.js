// Annotation page: upload -> /imgup, suggestions from /imginfo, labels saved to /annotate/api/photos/<id>/labels.
const $ = (sel) => document.querySelector(sel);
let vocabulary = [];

function say(text, isError = false) {
  $("#status").textContent = text;
  $("#status").className = isError ? "error" : "";
}

async function json(response) {
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function showEditor(idName, checked, scores, version) {
  $("#current").textContent = idName;
  $("#version").textContent = version ? `(model ${version})` : "";
  const box = $("#labels");
  box.replaceChildren();
  for (const name of vocabulary) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.value = name;
    input.checked = checked.includes(name);
    label.append(input, ` ${name}`);
    if (scores && scores[name] !== undefined) label.title = `score ${scores[name].toFixed(3)}`;
    if (checked.includes(name)) label.className = "suggested";
    box.append(label);
  }
  $("#editor").hidden = false;
}

async function refreshList() {
  const { photos } = await json(await fetch("api/photos"));
  $("#photos").replaceChildren(...photos.map((p) => {
    const li = document.createElement("li");
    li.textContent = `${p.id_name}: ${p.labels === null ? "(not labelled)" : p.labels.join(", ") || "(none)"}`;
    return li;
  }));
}

$("#upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const idName = form.get("id_name");
  try {
    say("Uploading…");
    await json(await fetch("../imgup", { method: "POST", body: form }));
    say("Asking the model…");
    try {
      const info = await json(await fetch(`../imginfo?id_name=${encodeURIComponent(idName)}`));
      showEditor(idName, info.predict_tags, info.scores, info.model_version);
      say(`Suggested: ${info.predict_tags.join(", ") || "nothing"}. Correct the labels, then save.`);
    } catch (err) {
      showEditor(idName, [], null, null);
      say(`Stored, but no suggestions: ${err.message}`, true);
    }
    await refreshList();
  } catch (err) {
    say(err.message, true);
  }
});

$("#save").addEventListener("click", async () => {
  const idName = $("#current").textContent;
  const labels = [...document.querySelectorAll("#labels input:checked")].map((i) => i.value);
  try {
    await json(await fetch(`api/photos/${encodeURIComponent(idName)}/labels`, {
      method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ labels }),
    }));
    say(`Saved ${labels.length} labels for ${idName}.`);
    await refreshList();
  } catch (err) {
    say(err.message, true);
  }
});

(async () => {
  vocabulary = (await json(await fetch("api/labels"))).labels;
  await refreshList();
})();
