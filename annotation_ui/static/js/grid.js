// The grid of listed photos: one page of api/photos (status, label and order filters), paged.
import { $, el, say } from "./dom.js";
import { api, q } from "./api.js";
import { PAGE, hooks, policy, state } from "./state.js";

function query(offset) {
  const p = new URLSearchParams({ status: $("#status").value, order: $("#order").value, offset, limit: PAGE,
    policy: policy() });
  if ($("#label-filter").value) p.set("label", $("#label-filter").value);
  return `api/photos?${p}`;
}

export async function loadPage(offset = 0) {
  const page = await api(query(offset));
  state.rows = page.photos;
  state.total = page.total;
  state.offset = offset;
  renderGrid();
  if (page.margins_pending) say("Still ranking photos by how unsure the model is: those not ranked yet come last. Reload the list in a moment.");
  return page;
}

export function tile(row, i) {
  const img = el("img", { alt: "", loading: "lazy", decoding: "async", width: 128, height: 96 });
  img.src = `api/thumb?id_name=${q(row.id_name)}&v=${row.sha256.slice(0, 12)}`;
  const badge = el("span", { className: "badge" });
  if (row.labelled_at) { badge.textContent = `✓ ${row.labels.length}`; badge.title = row.labels.join(", "); }
  else if (row.suggested_tags) { badge.textContent = `${row.suggested_tags.length} suggested`; badge.className += " hint"; }
  const item = el("button", { className: `tile${row.labelled_at ? " labelled" : ""}`, title: row.id_name },
    img, el("span", { className: "name", textContent: row.id_name }), badge);
  item.dataset.index = i;
  item.setAttribute("role", "listitem");
  item.addEventListener("click", () => hooks.open(i));
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

export function markTile() {
  document.querySelectorAll(".tile.current").forEach((t) => t.classList.remove("current"));
  const t = document.querySelector(`.tile[data-index="${state.index}"]`);
  if (t) t.classList.add("current");
}
